"""The metric gate: thresholds, comparison with a baseline, and a verdict a reviewer can believe.

LLM-judged metrics are noisy, so a relative rule compares per-line scores paired by line key (gate_keys.py):
the mean paired difference, its 95% interval, a family-adjusted p-value, the minimum detectable effect and a
verdict (the statistics are in gate_stats.py, explained in docs/gate.md). ``significant: true`` fails only when
the drop is beyond the limit and the data shows a drop; ``test: non_inferiority`` passes only when the data
shows the drop is within the limit. The result also says where the baseline came from and which rules changed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmops_ci.config import RUN_FIGURES, FlowSpec, GateRule
from llmops_ci.core.errors import UsageError
from llmops_ci.core.schema import as_dict
from llmops_ci.gate.keys import Pairing, load_line_keys, pair
from llmops_ci.gate.provenance import baseline_provenance, changed_rules
from llmops_ci.gate.repeats import mean_by_line
from llmops_ci.gate.scored import changed_lines
from llmops_ci.gate.stats import (
    MIN_LINES,
    RESAMPLES,
    SEED,
    Comparison,
    adjust_family,
    compare,
    non_inferior,
    non_inferiority_verdict,
)
from llmops_ci.gate.stats import level as threshold_level
from llmops_ci.results.state import check_summary, read_json_file
from llmops_ci.results.store import run_dir
from llmops_ci.results.summary import FlowResult, RunResult, Summary

__all__ = ["MIN_LINES", "RESAMPLES", "SEED", "Comparison", "compare"]  # compare/paired_checks: for against: too
_EPS = 1e-12


@dataclass(frozen=True)
class Baseline:
    summary: Summary
    state_dir: Path | None  # None when only a summary.json was given (no per-line scores)
    source: str


def load_baseline(path: Path | None) -> Baseline | None:
    if path is None:
        return None
    file = path / "summary.json" if path.is_dir() else path
    try:
        data = read_json_file(file, "pass the state dir (or its summary.json) of a complete run on the target branch")
    except FileNotFoundError:
        raise UsageError(f"--baseline {path}: not found; pass the state dir (or its summary.json) of a run on the "
                         "target branch") from None
    except UsageError as exc:
        raise UsageError(f"--baseline {exc}") from None
    try:
        check_summary(data, str(file))
    except UsageError as exc:
        raise UsageError(f"--baseline {exc}") from None
    return Baseline(Summary.parse(data), path if path.is_dir() else None, str(path))


@dataclass
class Check:
    metric: str
    value: float | None
    baseline: float | None
    rule: str
    limit: float
    passed: bool
    verdict: str | None
    interval: list[float] | None = None
    delta: float | None = None  # value - baseline, on the metric's scale (what max_drop/max_rise limit)
    lines: int | None = None
    note: str | None = None
    # the interval's scale: the mean paired difference of the per-line score `scores:` names, and its point value
    interval_of: str | None = None
    line_delta: float | None = None
    significant: bool | None = None  # the rule asks for a significant change (significant: true)
    test: str | None = None  # non_inferiority: the rule passes only on shown non-inferiority
    p_value: float | None = None  # two-sided p of "no change", adjusted over the flow's family
    mde: float | None = None  # the change this data detects with 80% power at alpha 0.05 (per-line scale)
    bound: float | None = None  # one-sided 95% bound of the change on the worse side (non_inferiority)
    clusters: int | None = None
    method: str | None = None
    repeats: int | None = None  # runs per data line; the line's score is their mean
    spread: float | None = None  # the mean standard deviation of a line's score across its repeats (this run)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("baseline", "verdict")}


@dataclass
class FlowGate:
    flow: str
    checks: list[Check] = field(default_factory=list)
    changed_rules: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, Any] | None = None  # where the baseline came from and whether it is comparable
    provenance: dict[str, Any] = field(default_factory=dict)  # this run's, read when it serves as a baseline
    changed_lines: dict[str, Any] = field(default_factory=dict)  # metric -> lines scored otherwise than the baseline

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"passed": self.passed, "checks": [c.to_json() for c in self.checks]}
        out["changed_rules"] = self.changed_rules
        if self.baseline is not None:
            out["baseline"] = self.baseline
        if self.provenance:
            out["provenance"] = self.provenance
        if self.changed_lines:
            out["changed_lines"] = self.changed_lines
        return out


# --- reading values ------------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    """A metric as a float: NaN for a value that is there but is no number (null, NaN, text), None when absent."""
    if isinstance(value, bool):
        return math.nan
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            return math.nan
    return math.nan


def _run_figure(run: RunResult, figure: str) -> float | None:
    failed, total = run.lines_failed, run.lines_total
    values = {
        "lines_failed": failed,
        "lines_failed_ratio": (failed / total) if failed is not None and total else None,
        "latency_p50": run.latency_p50, "latency_p95": run.latency_p95,
        "duration_s": run.duration_s, "tokens_prompt": run.tokens.get("prompt"),
        "tokens_completion": run.tokens.get("completion"), "tokens_total": run.tokens.get("total"),
    }
    if figure not in values or values[figure] is None:
        return None
    return _number(values[figure])


def metric_value(summary: Summary, flow: str, metric: str) -> tuple[float | None, list[str]]:
    """The value of ``<evaluation>.<metric>`` or ``run.<figure>`` and the names that do exist."""
    entry = summary.flows.get(flow) or FlowResult()
    source, _, name = metric.partition(".")
    if source == "run":
        return (_run_figure(entry.run, name) if entry.run else None), [f"run.{f}" for f in RUN_FIGURES]
    evaluation = entry.evaluations.get(source)
    metrics = evaluation.metrics if evaluation is not None else {}
    return (_number(metrics[name]) if name in metrics else None), [f"{source}.{m}" for m in sorted(metrics)]


def line_scores(state_dir: Path | None, flow: str, evaluation: str, output: str) -> dict[int, float] | None:
    """Each data line's score (with repeats: the mean of its completed repeats), or None without per-line results."""
    scored = scored_lines(state_dir, flow, evaluation, output)
    return mean_by_line(scored)[0] if scored is not None else None


def scored_lines(state_dir: Path | None, flow: str, evaluation: str, output: str) -> list[tuple[int, float]] | None:
    """(data line, score) of every completed record; a line appears once per repeat."""
    if state_dir is None:
        return None
    path = run_dir(state_dir, flow, evaluation) / "lines.jsonl"
    if not path.is_file():
        return None
    scores: list[tuple[int, float]] = []
    again = "run the evaluation again (or pass the state dir of a complete run as --baseline)"
    try:
        with path.open(encoding="utf-8") as fh:
            for number, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except (ValueError, RecursionError) as exc:
                    raise UsageError(f"{path}:{number}: not a JSON line ({str(exc)[:100]}; the file is truncated "
                                     f"or damaged); {again}") from None
                line = record.get("line") if isinstance(record, dict) else None
                if not isinstance(line, int) or isinstance(line, bool):
                    raise UsageError(f"{path}:{number}: not a line result (no line number); {again}")
                value = as_dict(record.get("outputs")).get(output)
                if record.get("status") == "Completed" and isinstance(value, (int, float)) \
                        and not isinstance(value, bool) and math.isfinite(value):
                    scores.append((line, float(value)))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read ({exc}); {again}") from None
    return scores


# --- the gate ----------------------------------------------------------------------------------------

def _keyed(scores: dict[int, float], keys: dict[int, str], kind: str) -> dict[str, float]:
    if kind == "line":
        return {str(i): v for i, v in scores.items()}
    return {keys[i]: v for i, v in scores.items() if i in keys}


def gate_flow(flow: FlowSpec, state_dir: Path, summary: Summary, baseline: Baseline | None,
              provenance: dict[str, Any] | None = None) -> FlowGate:
    """``provenance``: this run's (commit, time, data and evaluation hashes), kept for when it is a baseline."""
    result = FlowGate(flow.name, provenance=dict(provenance or {}))
    values: dict[str, tuple[GateRule, float, float | None, str | None, bool, str | None]] = {}
    levels: dict[str, dict[str, Any]] = {}  # threshold rows' intervals
    comparisons: dict[str, Comparison] = {}
    notes: dict[str, str | None] = {}
    pairings: dict[str | None, Pairing] = {}  # by reference flow (None: the baseline)
    for metric, rule in flow.gate.items():
        source, _, name = metric.partition(".")
        against = getattr(rule, "against", None)  # a sibling flow of this run instead of the baseline
        if source != "run" and source not in flow.evaluations and not (source == "parity"
                                                                       and getattr(flow, "parity", None)):
            names = [f"run.{f}" for f in RUN_FIGURES] + [f"{e}.<metric>" for e in flow.evaluations]
            raise UsageError(f"gate rule '{metric}' of flow '{flow.name}': no evaluation '{source}' in the config; "
                             f"rules can name: {', '.join(names)}")
        if source != "run" and source not in (summary.flows.get(flow.name) or FlowResult()).evaluations:
            raise UsageError(f"gate rule '{metric}' of flow '{flow.name}': no results for evaluation '{source}' in "
                             f"{state_dir}; run 'llmops-ci eval-run --flow {flow.name}' first")
        value, available = metric_value(summary, flow.name, metric)
        if value is None:
            raise UsageError(f"gate rule '{metric}' of flow '{flow.name}': no such metric in {state_dir}; "
                             f"available: {', '.join(available) or 'none'}")
        if not math.isfinite(value):
            entry = (summary.flows.get(flow.name) or FlowResult()).evaluations.get(source)
            result.checks += _not_a_number(metric, rule, entry.metrics.get(name) if entry is not None else None)
            continue
        reference = Baseline(summary, state_dir, f"flow {against}") if against else baseline
        ref_flow = against or flow.name
        base_value = metric_value(reference.summary, ref_flow, metric)[0] if reference else None
        if base_value is not None and not math.isfinite(base_value):
            base_value = None  # a baseline without a usable value is no baseline for this metric
        if against and base_value is None:
            raise UsageError(f"gate rule '{metric}' of flow '{flow.name}' compares against flow '{against}', "
                             f"which has no value for it in {state_dir}; run both flows (batch-run and eval-run) "
                             "with the same --state-dir")
        output = flow.evaluations[source].scores.get(name) if source in flow.evaluations else None
        values[metric] = (rule, value, base_value, output, reference is not None, against)
        if output and (rule.min is not None or rule.max is not None):
            levels[metric] = _level(flow, state_dir, source, output)
        relative = rule.max_drop is not None or rule.max_rise is not None
        if output and relative and reference is not None and base_value is not None:
            current, spread, repeats = mean_by_line(scored_lines(state_dir, flow.name, source, output) or [])
            previous = line_scores(reference.state_dir, ref_flow, source, output)
            if previous is None:
                continue
            if against not in pairings:
                mine = load_line_keys(run_dir(state_dir, flow.name))
                pairings[against] = pair(flow, mine, load_line_keys(run_dir(state_dir, against)), same_data=True) \
                    if against else pair(flow, mine, load_line_keys(run_dir(reference.state_dir, flow.name)
                                                                    if reference.state_dir else None))
            pairing = pairings[against]
            comparisons[metric] = compare(_keyed(current, pairing.current, pairing.kind),
                                          _keyed(previous, pairing.baseline, pairing.kind), rule,
                                          clusters=pairing.clusters)
            notes[metric] = pairing.note
            changed = changed_lines(state_dir, flow.name, current, _keyed(previous, pairing.baseline, pairing.kind),
                                    pairing.current, pairing.kind)
            if changed is not None and metric not in result.changed_lines:  # for the comment (scored.py)
                result.changed_lines[metric] = changed
            if repeats > 1:
                comparisons[metric] = dataclasses.replace(comparisons[metric], repeats=repeats,
                                                          spread=round(spread, 6) if spread is not None else None)
    comparisons = adjust_family(comparisons, flow.gate_family)
    for metric, (rule, value, base_value, output, have_reference, against) in values.items():
        checks = _checks(metric, rule, value, base_value, comparisons.get(metric), have_reference, output,
                         notes.get(metric))
        for check in checks:
            if check.rule in ("min", "max") and levels.get(metric):
                for key, extra in levels[metric].items():
                    setattr(check, key, extra)
        for check in checks if against else []:
            if check.rule in ("max_drop", "max_rise"):
                check.note = f"against flow '{against}' in this run" + (f"; {check.note}" if check.note else "")
        result.checks += checks
    if baseline is not None:
        result.changed_rules = changed_rules(flow, baseline.summary)
        result.baseline = baseline_provenance(flow, summary, baseline.summary, baseline.source, result.provenance)
    return result


def _level(flow: FlowSpec, state_dir: Path, evaluation: str, output: str) -> dict[str, Any]:
    """A threshold row's interval (of the mean per-line score) when the scores are 0/1 or clustered, else {}."""
    scores = line_scores(state_dir, flow.name, evaluation, output) or {}
    keys = load_line_keys(run_dir(state_dir, flow.name)) if flow.cluster else None
    found = threshold_level(scores, keys.clusters if keys is not None and keys.cluster_of == flow.cluster else None)
    if found is None:
        return {}
    return {"interval": list(found.interval), "interval_of": f"mean per-line '{output}'", "lines": found.lines,
            "line_delta": None, "method": found.method, "clusters": found.clusters}


def paired_checks(metric: str, rule: GateRule, value: float, reference: float | None,
                  comparison: Comparison | None, *, output: str | None, note: str | None = None) -> list[Check]:
    """The check rows of one rule from a paired comparison, whatever the reference is: the baseline run here, a
    sibling flow of the same run for ``against: <flow>`` rules. Build ``comparison`` with
    ``gate_stats.compare(current per-line scores, reference per-line scores, rule)`` (both keyed by line key),
    put a flow's comparisons through ``gate_stats.adjust_family`` (Holm), then call this per rule."""
    return _checks(metric, rule, value, reference, comparison, True, output, note)


def _not_a_number(metric: str, rule: GateRule, raw: Any) -> list[Check]:
    """A metric that is NaN (or null, text) breaks every rule on it: it must never pass a comparison by accident.
    ``raw``: the value as the summary keeps it (a NaN or an infinity as null), for the note."""
    limits = (("min", rule.min), ("max", rule.max), ("max_drop", rule.max_drop), ("max_rise", rule.max_rise))
    if isinstance(raw, (str, bool)) or (raw is not None and not isinstance(raw, (int, float))):
        shown = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:39] + "…"
        note = (f"the metric is {shown} ({type(raw).__name__}), not a number: the evaluation must log a number "
                "(log_metric(name, float(value)))")
    else:
        note = ("the metric is not a number (NaN or empty): the evaluation produced no usable value; look at its "
                "failed lines")
    return [Check(metric, None, None, kind, limit, False, None, note=note)
            for kind, limit in limits if limit is not None]


def _stats(comparison: Comparison, output: str | None, pairing_note: str | None) -> dict[str, Any]:
    """The paired row's statistics; the interval is on the per-line score's scale, with its own point value."""
    extra: dict[str, Any] = {
        "interval": list(comparison.interval) if comparison.interval else None, "lines": comparison.lines,
        "interval_of": f"mean per-line difference of '{output}'",
        "line_delta": round(comparison.delta, 6) if comparison.delta is not None else None,
        "p_value": round(comparison.p_value, 6) if comparison.p_value is not None else None,
        "mde": comparison.mde, "clusters": comparison.clusters, "method": comparison.method,
        "repeats": comparison.repeats, "spread": comparison.spread}
    notes = [n for n in (pairing_note, comparison.note) if n]
    missing = comparison.only_current + comparison.only_baseline
    if missing:
        notes.insert(0, f"{comparison.only_current} line(s) only in this run, {comparison.only_baseline} only in "
                        "the baseline; compared the lines both scored")
    extra["note"] = "; ".join(notes) or None
    return extra


def _checks(metric: str, rule: GateRule, value: float, base: float | None, comparison: Comparison | None,
            have_baseline: bool, output: str | None, pairing_note: str | None = None) -> list[Check]:
    verdict = comparison.verdict if comparison else None
    extra = _stats(comparison, output, pairing_note) if comparison else {}
    checks = []
    # a threshold judges the value alone: the comparison's interval says nothing about it
    if rule.min is not None:
        checks.append(Check(metric, value, base, "min", rule.min, value >= rule.min - _EPS, None))
    if rule.max is not None:
        checks.append(Check(metric, value, base, "max", rule.max, value <= rule.max + _EPS, None))
    flags: dict[str, Any] = {"significant": rule.significant or None, "test": rule.test}
    for kind, limit in (("max_drop", rule.max_drop), ("max_rise", rule.max_rise)):
        if limit is None:
            continue
        if base is None:
            reason = "no baseline" if not have_baseline else "the baseline has no value for this metric"
            if rule.test == "non_inferiority":  # the burden of proof is on the change: nothing shown, no pass
                checks.append(Check(metric, value, None, kind, limit, False, "no baseline", **flags,
                                    note=reason + ": non-inferiority cannot be shown"))
                continue
            checks.append(Check(metric, value, None, kind, limit, True, "no baseline", note=reason, **flags))
            continue
        delta = value - base
        broke = delta < -limit - _EPS if kind == "max_drop" else delta > limit + _EPS
        note = extra.get("note")
        bound = None
        row_verdict = verdict
        if rule.test == "non_inferiority":
            if comparison and comparison.interval:
                broke, bound = not non_inferior(comparison), comparison.bound
                row_verdict = non_inferiority_verdict(comparison)
            else:
                broke = True
                note = ("no per-line scores to show non-inferiority with" if not output else
                        "no interval (too few paired lines or no baseline lines): non-inferiority not shown")
        elif rule.significant and comparison and comparison.interval:
            broke = broke and comparison.verdict == "degraded"
        elif rule.significant:
            note = ("no per-line scores to compute an interval" if not output else
                    "no interval (too few paired lines or no baseline lines)") + "; judged on the plain delta"
        elif comparison is None:
            note = note or ("no interval: declare the per-line score with 'scores:' on the evaluation"
                            if not output else "no interval: the baseline has no per-line scores")
        checks.append(Check(metric, value, base, kind, limit, not broke, row_verdict,
                            **{**extra, "note": note}, delta=round(delta, 6), bound=bound, **flags))
    return checks
