"""``llmops-ci gate``: check metrics against thresholds and a baseline; fail the build when a rule breaks."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from llmops_ci.core.errors import CheckFailed, UsageError
from llmops_ci.core.log import number
from llmops_ci.gate.provenance import run_provenance
from llmops_ci.gate.verdict import Baseline, FlowGate, gate_flow, load_baseline
from llmops_ci.platforms import build_tags
from llmops_ci.releases.spec import git_commit
from llmops_ci.results.state import load_summary
from llmops_ci.results.store import update_flow_summary
from llmops_ci.results.summary import FlowResult, RunResult, Summary
from llmops_ci.steps import Context, Step
from llmops_ci.steps.settings import Settings

log = logging.getLogger("llmops_ci.gate")


def _num(value: float | None) -> str:
    return number(value)


def table(gate: FlowGate) -> str:
    from tabulate import tabulate  # only when a table is drawn: it is slow to import

    rows = []
    for c in sorted(gate.checks, key=lambda check: check.passed):  # failing rows first
        interval = f"[{_num(c.interval[0])}, {_num(c.interval[1])}]" if c.interval else "-"
        if c.interval and c.line_delta is not None:  # the per-line score's scale, with its own point value
            interval = f"{_num(c.line_delta)} {interval} per line"
        rule = f"{c.rule} {_num(c.limit)}" + (", significant: true" if c.significant else "") + (
            f", test: {c.test}" if c.test else "")
        stats = "-" if c.p_value is None else f"p {_num(c.p_value)}, mde {_num(c.mde)}, {c.method}" + (
            f" ({c.clusters} clusters)" if c.clusters else "") + (
            f", {c.repeats} repeats (within-line sd {_num(c.spread)})" if c.repeats else "")
        rows.append((c.metric, _num(c.value), _num(c.baseline), _num(c.delta), interval, stats, rule,
                     c.verdict or "-", "pass" if c.passed else "FAIL"))
    return tabulate(rows, headers=["metric", "value", "baseline", "delta", "95% CI (per-line score)", "statistics",
                                   "rule", "verdict", "result"])


def _unfinished(summary: Summary, flow: str) -> str | None:
    """Why the flow's results cannot be judged: a run or evaluation that never finished."""
    entry = summary.flows.get(flow) or FlowResult()
    if entry.run is not None and entry.run.status == "incomplete":
        return f"its batch run {entry.run.name} never finished"
    for name, evaluation in sorted(entry.evaluations.items()):
        if evaluation.status == "incomplete":
            return f"its evaluation {name} never finished"
    return None


def judged(summary: Summary, flow: str) -> dict[str, Any]:
    """What a gate verdict rests on: the batch run (and its content hash) and the evaluation runs it read."""
    entry = summary.flows.get(flow) or FlowResult()
    run = entry.run or RunResult()
    return {"run": run.name, "flow_hash": run.flow_hash, "data_hash": run.data_hash,
            "evaluation_runs": {name: e.run for name, e in sorted(entry.evaluations.items())}}


def _not_itself(flow: str, summary: Summary, baseline: Baseline) -> None:
    """A baseline holding this very run (its state dir, or a copy of it) would make every comparison vacuous: each
    drop 0, each rule passed. A flow whose results were carried over from the baseline is that run by design."""
    mine = (summary.flows.get(flow) or FlowResult()).run
    theirs = (baseline.summary.flows.get(flow) or FlowResult()).run
    if mine is not None and theirs is not None and mine.name and mine.name == theirs.name:
        raise UsageError(f"--baseline {baseline.source}: its run of flow '{flow}' is this very run ({mine.name}); "
                         "a run compared with itself cannot show a drop, so max_drop/max_rise would pass whatever "
                         "changed: pass the state dir of a run on the target branch (not this run's, nor a copy)")


class GateStep(Step):
    name = "gate"
    help = "check metrics against thresholds and a baseline; exit 1 when a rule breaks"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--baseline", type=Path, metavar="PATH",
                            help="state dir (or its summary.json) of a run on the target branch, for "
                                 "max_drop/max_rise rules")

    def run(self, settings: Settings, ctx: Context) -> int:
        config = ctx.project(settings.config).config
        flows = config.select(settings.flows)
        baseline = load_baseline(settings.baseline)
        commit = (git_commit(config.root, build_tags(ctx.environ).get("git.commit"))
                  if any(flow.gate for flow in flows) else None)
        summary = load_summary(ctx.state_dir)
        failed = []
        for flow in flows:
            if not flow.gate:
                log.info("%s: no gate rules", flow.name)
                continue
            unchanged = (summary.flows.get(flow.name) or FlowResult()).unchanged
            if unchanged is not None and not unchanged.carried_over:
                log.info("%s: unchanged since %s and no baseline results carried over: nothing to gate", flow.name,
                         unchanged.since)
                continue
            if baseline is not None and unchanged is None:
                _not_itself(flow.name, summary, baseline)
            unfinished = _unfinished(summary, flow.name)
            if unfinished:
                log.error("%s: gate not checked: %s; run batch-run and eval-run again", flow.name, unfinished)
                update_flow_summary(ctx.state_dir, flow.name, "gate", {"passed": False, "checks": [],
                                                                       "error": unfinished})
                failed.append(flow.name)
                continue
            result = gate_flow(flow, ctx.state_dir, summary, baseline, run_provenance(flow, commit))
            update_flow_summary(ctx.state_dir, flow.name, "gate", {**result.to_json(), **judged(summary, flow.name)})
            # under ``pr`` on a terminal the report that follows holds the same table: print it once
            shown = "\n" + table(result) if settings.gate_table else ""
            log.info("%s: gate %s%s%s", flow.name, "passed" if result.passed else "FAILED",
                     f" (baseline: {baseline.source})" if baseline else " (no baseline)", shown)
            for check in result.checks:
                if check.note:
                    log.info("  %s %s: %s", check.metric, check.rule, check.note)
            for rule in result.changed_rules:
                log.warning("%s: gate rule %s %s changed since the baseline: %s -> %s", flow.name, rule["metric"],
                            rule["rule"], "none" if rule["was"] is None else rule["was"],
                            "none" if rule["now"] is None else rule["now"])
            for warning in (result.baseline or {}).get("warnings", []):
                log.warning("%s: %s", flow.name, warning)
            if not result.passed:
                failed.append(flow.name)
        if failed:
            raise CheckFailed(f"gate failed for {', '.join(failed)}: see the table above")
        return 0


STEP = GateStep()
