"""The metric gate: thresholds, comparison with a baseline, and a verdict a reviewer can believe.

LLM-judged metrics are noisy, so a relative rule can compare per-line scores paired by data
line: the mean paired difference, its 95% bootstrap interval (fixed seed, so reruns agree) and
a verdict. ``significant: true`` fails only when the drop is beyond the limit and the interval
excludes zero.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmops_ci.config import RUN_FIGURES, FlowSpec, GateRule
from llmops_ci.errors import UsageError
from llmops_ci.runs import run_dir
from llmops_ci.schema import as_dict
from llmops_ci.state import check_summary, read_json_file

SEED = 20240607
RESAMPLES = 4000
MIN_LINES = 10
_EPS = 1e-12


@dataclass(frozen=True)
class Baseline:
    summary: dict[str, Any]
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
    return Baseline(data, path if path.is_dir() else None, str(path))


@dataclass
class Comparison:
    lines: int
    only_current: int
    only_baseline: int
    delta: float | None
    interval: tuple[float, float] | None
    verdict: str


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

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("baseline", "verdict")}


@dataclass
class FlowGate:
    flow: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [c.to_json() for c in self.checks]}


def higher_is_better(rule: GateRule) -> bool:
    return not (rule.max_rise is not None or (rule.max is not None and rule.min is None and rule.max_drop is None))


def compare(current: dict[int, float], baseline: dict[int, float], rule: GateRule, *, seed: int = SEED,
            resamples: int = RESAMPLES, min_lines: int = MIN_LINES) -> Comparison:
    """Paired difference (current - baseline) over the data lines both sides scored, with a bootstrap 95% CI."""
    common = sorted(set(current) & set(baseline))
    only_current, only_baseline = len(set(current) - set(baseline)), len(set(baseline) - set(current))
    diffs = [current[i] - baseline[i] for i in common]
    n = len(diffs)
    delta = sum(diffs) / n if n else None
    if n < min_lines:
        return Comparison(n, only_current, only_baseline, delta, None, "too few lines")
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    low, high = means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]
    tolerance = rule.max_drop if rule.max_drop is not None else rule.max_rise or 0.0
    better = higher_is_better(rule)
    if low > _EPS:
        verdict = "improved" if better else "degraded"
    elif high < -_EPS:
        verdict = "degraded" if better else "improved"
    elif -tolerance - _EPS <= low and high <= tolerance + _EPS:
        verdict = "unchanged"
    else:
        verdict = "inconclusive"
    return Comparison(n, only_current, only_baseline, delta, (round(low, 6), round(high, 6)), verdict)


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


def _run_figure(run: dict[str, Any], figure: str) -> float | None:
    tokens = as_dict(run.get("tokens"))
    failed, total = run.get("lines_failed"), run.get("lines_total")
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (failed, total))
    values = {
        "lines_failed": run.get("lines_failed"),
        "lines_failed_ratio": (failed / total) if numeric and total else None,
        "latency_p50": run.get("latency_p50"), "latency_p95": run.get("latency_p95"),
        "duration_s": run.get("duration_s"), "tokens_prompt": tokens.get("prompt"),
        "tokens_completion": tokens.get("completion"), "tokens_total": tokens.get("total"),
    }
    if figure not in values or values[figure] is None:
        return None
    return _number(values[figure])


def metric_value(summary: dict[str, Any], flow: str, metric: str) -> tuple[float | None, list[str]]:
    """The value of ``<evaluation>.<metric>`` or ``run.<figure>`` and the names that do exist."""
    entry = as_dict(as_dict(summary.get("flows")).get(flow))
    source, _, name = metric.partition(".")
    if source == "run":
        run = as_dict(entry.get("run"))
        return (_run_figure(run, name) if run else None), [f"run.{f}" for f in RUN_FIGURES]
    metrics = as_dict(as_dict(as_dict(entry.get("evaluations")).get(source)).get("metrics"))
    return (_number(metrics[name]) if name in metrics else None), [f"{source}.{m}" for m in sorted(metrics)]


def line_scores(state_dir: Path | None, flow: str, evaluation: str, output: str) -> dict[int, float] | None:
    if state_dir is None:
        return None
    path = run_dir(state_dir, f"{flow}/{evaluation}") / "lines.jsonl"
    if not path.is_file():
        return None
    scores: dict[int, float] = {}
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
                    scores[line] = float(value)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read ({exc}); {again}") from None
    return scores


# --- the gate ----------------------------------------------------------------------------------------

def gate_flow(flow: FlowSpec, state_dir: Path, summary: dict[str, Any], baseline: Baseline | None) -> FlowGate:
    result = FlowGate(flow.name)
    for metric, rule in flow.gate.items():
        source, _, name = metric.partition(".")
        if source != "run" and source not in flow.evaluations and not (source == "parity" and flow.parity):
            names = [f"run.{f}" for f in RUN_FIGURES] + [f"{e}.<metric>" for e in flow.evaluations]
            raise UsageError(f"gate rule '{metric}' of flow '{flow.name}': no evaluation '{source}' in the config; "
                             f"rules can name: {', '.join(names)}")
        if source != "run" and source not in as_dict(as_dict(as_dict(summary.get("flows")).get(flow.name))
                                                     .get("evaluations")):
            raise UsageError(f"gate rule '{metric}' of flow '{flow.name}': no results for evaluation '{source}' in "
                             f"{state_dir}; run 'llmops-ci eval-run --flow {flow.name}' first")
        value, available = metric_value(summary, flow.name, metric)
        if value is None:
            raise UsageError(f"gate rule '{metric}' of flow '{flow.name}': no such metric in {state_dir}; "
                             f"available: {', '.join(available) or 'none'}")
        if not math.isfinite(value):
            result.checks += _not_a_number(metric, rule)
            continue
        # against: the reference is the flow this one replaces, in this same run (paired by data line), not the
        # baseline; the statistics are the same paired comparison
        reference = Baseline(summary, state_dir, f"flow {rule.against}") if rule.against else baseline
        ref_flow = rule.against or flow.name
        base_value = metric_value(reference.summary, ref_flow, metric)[0] if reference else None
        if base_value is not None and not math.isfinite(base_value):
            base_value = None  # a baseline without a usable value is no baseline for this metric
        if rule.against and base_value is None:
            raise UsageError(f"gate rule '{metric}' of flow '{flow.name}' compares against flow '{rule.against}', "
                             f"which has no value for it in {state_dir}; run both flows (batch-run and eval-run) "
                             "with the same --state-dir")
        comparison = None
        output = flow.evaluations[source].scores.get(name) if source in flow.evaluations else None
        if output and reference is not None and base_value is not None:
            current = line_scores(state_dir, flow.name, source, output) or {}
            previous = line_scores(reference.state_dir, ref_flow, source, output)
            if previous is not None:
                comparison = compare(current, previous, rule)
        checks = _checks(metric, rule, value, base_value, comparison, reference is not None, output)
        for check in checks if rule.against else []:
            if check.rule in ("max_drop", "max_rise"):
                check.note = f"against flow '{rule.against}' in this run" + (f"; {check.note}" if check.note else "")
        result.checks += checks
    return result


def _not_a_number(metric: str, rule: GateRule) -> list[Check]:
    """A metric that is NaN (or null) breaks every rule on it: it must never pass a comparison by accident."""
    limits = (("min", rule.min), ("max", rule.max), ("max_drop", rule.max_drop), ("max_rise", rule.max_rise))
    return [Check(metric, None, None, kind, limit, False, None,
                  note="the metric is not a number (NaN or empty): the evaluation produced no usable value; look at "
                       "its failed lines")
            for kind, limit in limits if limit is not None]


def _checks(metric: str, rule: GateRule, value: float, base: float | None, comparison: Comparison | None,
            have_baseline: bool, output: str | None) -> list[Check]:
    verdict = comparison.verdict if comparison else None
    extra: dict[str, Any] = {}
    if comparison:
        # the interval is on the per-line score's scale, not the metric's: it comes with its own point value
        extra = {"interval": list(comparison.interval) if comparison.interval else None,
                 "lines": comparison.lines, "interval_of": f"mean per-line difference of '{output}'",
                 "line_delta": round(comparison.delta, 6) if comparison.delta is not None else None}
        missing = comparison.only_current + comparison.only_baseline
        if missing:
            extra["note"] = (f"{comparison.only_current} line(s) only in this run, {comparison.only_baseline} only "
                             "in the baseline; compared the lines both scored")
    checks = []
    # a threshold judges the value alone: the comparison's interval says nothing about it
    if rule.min is not None:
        checks.append(Check(metric, value, base, "min", rule.min, value >= rule.min - _EPS, None))
    if rule.max is not None:
        checks.append(Check(metric, value, base, "max", rule.max, value <= rule.max + _EPS, None))
    for kind, limit in (("max_drop", rule.max_drop), ("max_rise", rule.max_rise)):
        if limit is None:
            continue
        if base is None:
            reason = "no baseline" if not have_baseline else "the baseline has no value for this metric"
            checks.append(Check(metric, value, None, kind, limit, True, "no baseline", note=reason,
                                significant=rule.significant or None))
            continue
        delta = value - base
        broke = delta < -limit - _EPS if kind == "max_drop" else delta > limit + _EPS
        note = extra.get("note")
        if rule.significant and comparison and comparison.interval:
            low, high = comparison.interval
            broke = broke and (high < -_EPS if kind == "max_drop" else low > _EPS)
        elif rule.significant:
            note = ("no per-line scores to compute an interval" if not output else
                    "no interval (too few paired lines or no baseline lines)") + "; judged on the plain delta"
        elif comparison is None:
            note = note or ("no interval: declare the per-line score with 'scores:' on the evaluation"
                            if not output else "no interval: the baseline has no per-line scores")
        checks.append(Check(metric, value, base, kind, limit, not broke, verdict,
                            **{**extra, "note": note}, delta=round(delta, 6), significant=rule.significant or None))
    return checks
