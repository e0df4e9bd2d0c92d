"""The gate's rules as a reviewer reads them: every rule of a flow judged, boundaries, directions, which lines count."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmops_ci.config import GateRule
from llmops_ci.gate.stats import (
    ALPHA,
    MIN_LINES,
    Comparison,
    _summarise,
    compare,
    higher_is_better,
    non_inferior,
    non_inferiority_verdict,
    verdict_of,
)
from llmops_ci.gate.verdict import line_scores, paired_checks, scored_lines
from llmops_ci.results.summary import Summary
from tests.gate.conftest import GateProject
from tests.gate.test_gate import gate_json, write_state
from tests.helpers.config import Rule, judged, raw_rules
from tests.helpers.projects import CliResult

Cli = Callable[..., CliResult]


def _with_metric(root: Path, name: str, value: object) -> None:
    summary = json.loads((root / "summary.json").read_text())
    summary["flows"]["qa"]["evaluations"]["judge"]["metrics"][name] = value
    (root / "summary.json").write_text(json.dumps(summary))


# --- every rule of a flow is judged and reported ---------------------------------------------------------------

def test_every_rule_of_a_flow_gives_its_rows_even_after_a_nan_metric(
        cli: Cli, gate_project: GateProject) -> None:
    proj = gate_project({"judge.broken": Rule(min=0.1, max_drop=0.5), "judge.accuracy": Rule(min=0.5, max=0.9),
                         "run.lines_failed": Rule(max=5)})
    write_state(proj.path(".llmops"), {0: 1, 1: 1, 2: 1, 3: 0})
    _with_metric(proj.path(".llmops"), "broken", None)
    result = cli("gate")
    assert result.code == 1
    rows = {(c["metric"], c["rule"]): c for c in gate_json(proj)["checks"]}
    assert set(rows) == {("judge.broken", "min"), ("judge.broken", "max_drop"), ("judge.accuracy", "min"),
                         ("judge.accuracy", "max"), ("run.lines_failed", "max")}
    for rule in ("min", "max_drop"):
        nan_row = rows[("judge.broken", rule)]
        assert nan_row["passed"] is False and "value" not in nan_row
        assert "not a number" in nan_row["note"]
    assert rows[("judge.broken", "min")]["limit"] == 0.1 and rows[("judge.broken", "max_drop")]["limit"] == 0.5
    assert all(rows[k]["passed"] for k in rows if k[0] != "judge.broken")


def test_a_nan_metric_fails_every_kind_of_rule_on_it(cli: Cli, gate_project: GateProject) -> None:
    proj = gate_project({"judge.broken": Rule(min=0.1, max=0.9, max_rise=0.2)})
    write_state(proj.path(".llmops"), {0: 1})
    _with_metric(proj.path(".llmops"), "broken", "n/a")
    assert cli("gate").code == 1
    assert sorted((c["rule"], c["passed"]) for c in gate_json(proj)["checks"]) == [
        ("max", False), ("max_rise", False), ("min", False)]
    # what the evaluation logged is said: text is not an empty result
    assert all("'n/a' (str), not a number" in c["note"] and "log_metric" in c["note"]
               for c in gate_json(proj)["checks"])


def test_several_failing_rules_all_fail(cli: Cli, gate_project: GateProject) -> None:
    proj = gate_project({"judge.accuracy": Rule(min=0.9), "run.lines_failed": Rule(max=0)})
    write_state(proj.path(".llmops"), {0: 1, 1: 0})
    assert cli("gate").code == 1
    assert [c["passed"] for c in gate_json(proj)["checks"]] == [False, False]


@pytest.mark.parametrize(("rule", "passed"), [
    ("max_drop: 0.25", True),   # 0.5 - 0.75 = -0.25: exactly the limit passes
    ("max_drop: 0.2499", False),
    ("max_rise: 0.25", True),
])
def test_relative_limits_at_the_boundary(rule: str, passed: bool, cli: Cli, gate_project: GateProject,
                                         tmp_path: Path) -> None:
    proj = gate_project(raw_rules(f"judge.accuracy: {{{rule}}}"))
    write_state(proj.path(".llmops"), {0: 1, 1: 0})
    write_state(tmp_path / "main", {0: 1, 1: 1, 2: 1, 3: 0})
    result = cli("gate", "--baseline", str(tmp_path / "main" / "summary.json"))
    (check,) = gate_json(proj)["checks"]
    assert check["passed"] is passed and result.code == (0 if passed else 1)
    assert check["delta"] == -0.25 and check["baseline"] == 0.75 and check["value"] == 0.5


def test_a_rise_beyond_max_rise_fails_and_at_the_limit_passes() -> None:
    rule = GateRule("run.latency_p95", max_rise=1.0)
    (at,) = paired_checks("run.latency_p95", rule, 3.0, 2.0, None, output=None)
    (beyond,) = paired_checks("run.latency_p95", rule, 3.0001, 2.0, None, output=None)
    (drop,) = paired_checks("run.latency_p95", rule, 0.5, 2.0, None, output=None)
    assert (at.passed, beyond.passed, drop.passed) == (True, False, True)
    assert at.delta == 1.0 and beyond.rule == "max_rise" and beyond.limit == 1.0
    assert "declare the per-line score" in (at.note or "")


def test_thresholds_at_the_boundary_directly() -> None:
    rule = GateRule("judge.accuracy", min=0.5, max=0.8)
    assert [c.passed for c in paired_checks("m", rule, 0.5, None, None, output="x")] == [True, True]
    assert [c.passed for c in paired_checks("m", rule, 0.8, None, None, output="x")] == [True, True]
    assert [c.passed for c in paired_checks("m", rule, 0.4999, None, None, output="x")] == [False, True]
    assert [c.passed for c in paired_checks("m", rule, 0.8001, None, None, output="x")] == [True, False]
    assert [(c.rule, c.limit, c.verdict) for c in paired_checks("m", rule, 0.6, None, None, output="x")] == [
        ("min", 0.5, None), ("max", 0.8, None)]


# --- significant and non-inferiority rows ------------------------------------------------------------------------

def _comparison(verdict: str, delta: float = -0.3, interval: tuple[float, float] | None = (-0.5, -0.1),
                p: float = 0.01, **more: object) -> Comparison:
    return Comparison(20, 0, 0, delta, interval, verdict, method="paired-bootstrap", p_value=p, p_raw=p,
                      mde=0.2, **more)  # type: ignore[arg-type]


@pytest.mark.parametrize(("verdict", "passed"), [("degraded", False), ("inconclusive", True),
                                                 ("underpowered", True), ("unchanged", True)])
def test_significant_max_rise_fails_only_on_a_shown_rise(verdict: str, passed: bool) -> None:
    rule = GateRule("run.latency", max_rise=0.1, significant=True)
    (check,) = paired_checks("run.latency", rule, 2.0, 1.0, _comparison(verdict, 1.0, (0.5, 1.5)), output="s")
    assert check.passed is passed and check.verdict == verdict and check.significant is True


def test_significant_rule_within_the_limit_passes_even_when_degraded() -> None:
    rule = GateRule("m", max_drop=0.5, significant=True)
    (check,) = paired_checks("m", rule, 0.8, 1.0, _comparison("degraded"), output="s")
    assert check.passed is True and check.delta == -0.2


def test_significant_rule_without_an_interval_is_judged_on_the_plain_delta() -> None:
    rule = GateRule("m", max_drop=0.1, significant=True)
    (check,) = paired_checks("m", rule, 0.5, 1.0, _comparison("too few lines", interval=None), output="s")
    assert check.passed is False and check.note == "no interval (too few paired lines or no baseline lines); " \
                                                   "judged on the plain delta"
    (check,) = paired_checks("m", rule, 0.5, 1.0, None, output=None)
    assert check.passed is False and check.note == "no per-line scores to compute an interval; judged on the " \
                                                   "plain delta"


def test_a_plain_rule_fails_on_the_delta_whatever_the_verdict() -> None:
    rule = GateRule("m", max_drop=0.1)
    (check,) = paired_checks("m", rule, 0.5, 1.0, _comparison("inconclusive"), output="s")
    assert check.passed is False and check.verdict == "inconclusive" and check.significant is None
    assert check.interval == [-0.5, -0.1] and check.lines == 20 and check.p_value == 0.01 and check.mde == 0.2
    assert check.interval_of == "mean per-line difference of 's'" and check.line_delta == -0.3


def test_non_inferiority_rows() -> None:
    rule = GateRule("m", max_drop=0.1, test="non_inferiority")
    shown = _comparison("unchanged", -0.01, (-0.05, 0.03), 0.5, bound=-0.04, tolerance=0.1, mde_one_sided=0.05)
    (check,) = paired_checks("m", rule, 0.99, 1.0, shown, output="s")
    assert check.passed is True and check.bound == -0.04 and check.test == "non_inferiority"
    not_shown = _comparison("inconclusive", -0.01, (-0.3, 0.2), 0.5, bound=-0.25, tolerance=0.1, mde_one_sided=0.05)
    (check,) = paired_checks("m", rule, 0.99, 1.0, not_shown, output="s")
    assert check.passed is False and check.verdict == "inconclusive"
    (check,) = paired_checks("m", rule, 0.99, 1.0, None, output=None)
    assert check.passed is False and check.note == "no per-line scores to show non-inferiority with"
    (check,) = paired_checks("m", rule, 0.99, 1.0, _comparison("too few lines", interval=None), output="s")
    assert check.passed is False and check.note.startswith("no interval (too few paired lines")
    (check,) = paired_checks("m", rule, 0.99, None, None, output="s")
    assert check.passed is False and check.verdict == "no baseline"
    assert check.note == "the baseline has no value for this metric: non-inferiority cannot be shown"


def test_no_baseline_rows_pass_and_say_why() -> None:
    rule = GateRule("m", max_drop=0.1, max_rise=0.2)
    from llmops_ci.gate.verdict import _checks

    rows = _checks("m", rule, 0.5, None, None, False, "s")
    assert [(c.rule, c.passed, c.verdict, c.note, c.baseline) for c in rows] == [
        ("max_drop", True, "no baseline", "no baseline", None), ("max_rise", True, "no baseline", "no baseline", None)]
    rows = _checks("m", rule, 0.5, None, None, True, "s")
    assert {c.note for c in rows} == {"the baseline has no value for this metric"}


# --- verdicts: direction, boundaries, the tolerance that counts ------------------------------------------------

@pytest.mark.parametrize(("rule", "higher"), [
    (GateRule("m", min=0.5), True),
    (GateRule("m", max_drop=0.1), True),
    (GateRule("m", max=0.5), False),  # a ceiling only: lower is better (latency, cost)
    (GateRule("m", min=0.1, max=0.9), True),
    (GateRule("m", max=0.9, max_drop=0.1), True),
    (GateRule("m", max_rise=0.1), False),
    (GateRule("m", min=0.1, max_rise=0.1), False),
    (GateRule("m"), True),
])
def test_which_direction_is_better(rule: GateRule, higher: bool) -> None:
    assert higher_is_better(rule) is higher


def _graded(n: int, shift: float) -> tuple[dict[int, float], dict[int, float]]:
    base = {i: 3.0 + (i % 5) * 0.1 for i in range(n)}
    return {i: v + shift + (0.01 if i % 2 else -0.01) for i, v in base.items()}, base


def test_a_rise_of_a_higher_is_better_metric_is_improved() -> None:
    current, base = _graded(40, 0.5)
    result = compare(current, base, GateRule("m", max_drop=0.1))
    assert result.verdict == "improved" and result.higher_better is True and result.delta == pytest.approx(0.5)
    assert compare(base, current, GateRule("m", max_drop=0.1)).verdict == "degraded"


def test_a_rise_of_a_ceiling_only_metric_is_degraded() -> None:
    current, base = _graded(40, 0.5)
    assert compare(current, base, GateRule("m", max=10.0)).verdict == "degraded"
    assert compare(base, current, GateRule("m", max=10.0)).verdict == "improved"


def test_exactly_min_lines_paired_lines_are_compared() -> None:
    assert MIN_LINES == 10
    current, base = _graded(10, 0.5)
    result = compare(current, base, GateRule("m", max_drop=0.1))
    assert result.lines == 10 and result.interval is not None and result.verdict == "improved"
    del current[9]
    short = compare(current, base, GateRule("m", max_drop=0.1))
    assert (short.lines, short.interval, short.verdict, short.only_baseline, short.only_current) == (
        9, None, "too few lines", 1, 0)
    assert short.delta == pytest.approx(sum(current[i] - base[i] for i in range(9)) / 9)


def _verdict(interval: tuple[float, float], tolerance: float, p: float = 0.5, delta: float = 0.0,
             mde: float | None = None, higher: bool = True) -> str:
    return verdict_of(Comparison(20, 0, 0, delta, interval, "", p_value=p, mde=mde, tolerance=tolerance,
                                 higher_better=higher))


def test_unchanged_means_the_interval_lies_within_the_limit_inclusive() -> None:
    assert _verdict((-0.1, 0.1), 0.1) == "unchanged"
    assert _verdict((-0.1001, 0.05), 0.1) == "inconclusive"
    assert _verdict((-0.05, 0.1001), 0.1) == "inconclusive"
    assert _verdict((0.0, 0.0), 0.0) == "unchanged"


def test_unchanged_uses_the_max_rise_limit_when_there_is_no_max_drop() -> None:
    current, base = _graded(40, 0.0)
    assert compare(current, base, GateRule("m", max_rise=0.5)).tolerance == 0.5
    assert compare(current, base, GateRule("m", max_rise=0.5)).verdict == "unchanged"
    assert compare(current, base, GateRule("m", max_drop=0.2, max_rise=0.5)).tolerance == 0.2
    assert compare(current, base, GateRule("m", min=0.2)).tolerance == 0.0


def test_underpowered_when_the_limit_is_below_the_mde() -> None:
    assert _verdict((-0.3, 0.3), 0.1, mde=0.2) == "underpowered"
    assert _verdict((-0.3, 0.3), 0.2, mde=0.2) == "inconclusive"  # at the mde: detectable
    assert _verdict((-0.3, 0.3), 0.1) == "inconclusive"


def test_a_shown_change_needs_p_below_alpha() -> None:
    assert ALPHA == 0.05
    assert _verdict((-0.3, -0.1), 0.05, p=0.049, delta=-0.2) == "degraded"
    assert _verdict((-0.3, -0.1), 0.05, p=0.05, delta=-0.2) == "inconclusive"
    assert _verdict((0.1, 0.3), 0.05, p=0.01, delta=0.2) == "improved"
    assert _verdict((0.1, 0.3), 0.05, p=0.01, delta=0.2, higher=False) == "degraded"
    assert _verdict((-0.3, -0.1), 0.05, p=0.01, delta=-0.2, higher=False) == "improved"
    assert _verdict((-0.01, 0.01), 0.05, p=0.01, delta=0.0) == "unchanged"  # no direction: not a change


def test_non_inferiority_bound_boundaries() -> None:
    def c(bound: float | None, higher: bool = True, **more: object) -> Comparison:
        return Comparison(20, 0, 0, 0.0, (-0.2, 0.2), "", p_value=0.5, bound=bound, tolerance=0.1,
                          higher_better=higher, **more)  # type: ignore[arg-type]

    assert non_inferior(c(-0.1)) and not non_inferior(c(-0.1001)) and not non_inferior(c(None))
    assert non_inferior(c(0.1, higher=False)) and not non_inferior(c(0.1001, higher=False))
    assert non_inferiority_verdict(c(-0.05)) == "unchanged"
    assert non_inferiority_verdict(c(-0.2, mde_one_sided=0.2)) == "underpowered"
    assert non_inferiority_verdict(c(-0.2, mde_one_sided=0.1)) == "inconclusive"
    assert non_inferiority_verdict(c(-0.2)) == "inconclusive"


def test_bootstrap_interval_end_points_are_the_2_5_and_97_5_percentiles() -> None:
    means = list(range(4000))[::-1]  # any order: they are sorted
    stats = _summarise(means, 0.5, better=True)
    assert stats.interval == (100.0, 3899.0)  # 100 values below, 100 above
    assert stats.bound == 200.0  # one-sided 95%: 5% below
    assert _summarise(means, 0.5, better=False).bound == 3799.0
    assert stats.p_value == pytest.approx(2 * (1 + 1) / 4001)  # only 0 is <= 0: twice (1 + 1) / (B + 1)
    assert stats.se == 0.5 and stats.mde == pytest.approx(round((1.959964 + 0.841621) * 0.5, 6), abs=1e-5)
    centred = _summarise([x - 1000 for x in range(4000)], 0.1, better=True)
    assert centred.p_value == pytest.approx(2 * (1001 + 1) / 4001)


# --- which lines' scores count ----------------------------------------------------------------------------------

def _lines(root: Path, records: list[object], text: str | None = None) -> Path:
    folder = root / "runs" / "qa" / "evals" / "judge"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lines.jsonl").write_text(text if text is not None else "".join(json.dumps(r) + "\n" for r in records))
    return root


def test_only_completed_finite_numeric_scores_count(tmp_path: Path) -> None:
    root = _lines(tmp_path, [
        {"line": 0, "status": "Completed", "outputs": {"correct": 1}},
        {"line": 1, "status": "Failed", "outputs": {"correct": 1.0}},
        {"line": 2, "status": "Completed", "outputs": {"correct": True}},
        {"line": 3, "status": "Completed", "outputs": {"correct": "1"}},
        {"line": 4, "status": "Completed", "outputs": {"correct": math.inf}},
        {"line": 5, "status": "Completed", "outputs": {"other": 1.0}},
        {"line": 6, "status": "Completed", "outputs": None},
        {"line": 7, "status": "Completed", "outputs": {"correct": 0.25}},
    ])
    assert scored_lines(root, "qa", "judge", "correct") == [(0, 1.0), (7, 0.25)]


def test_a_blank_line_does_not_stop_the_read(tmp_path: Path) -> None:
    rec = [json.dumps({"line": i, "status": "Completed", "outputs": {"correct": float(i)}}) for i in range(3)]
    root = _lines(tmp_path, [], text=rec[0] + "\n\n   \n" + rec[1] + "\n" + rec[2])
    assert scored_lines(root, "qa", "judge", "correct") == [(0, 0.0), (1, 1.0), (2, 2.0)]


def test_repeats_of_a_line_are_averaged(tmp_path: Path) -> None:
    root = _lines(tmp_path, [{"line": 0, "status": "Completed", "outputs": {"correct": 1.0}},
                             {"line": 0, "status": "Completed", "outputs": {"correct": 0.0}},
                             {"line": 1, "status": "Completed", "outputs": {"correct": 1.0}}])
    assert line_scores(root, "qa", "judge", "correct") == {0: 0.5, 1: 1.0}


def test_no_per_line_scores(tmp_path: Path) -> None:
    assert scored_lines(None, "qa", "judge", "correct") is None
    assert line_scores(tmp_path, "qa", "judge", "correct") is None


@pytest.mark.parametrize(("text", "message"), [
    ('{"line": 0, "status": "Completed"}\n{"line": 1, ', ":2: not a JSON line"),
    ('{"line": 0}\n["x"]\n', ":2: not a line result (no line number)"),
    ('{"line": true}\n', ":1: not a line result"),
    ('{"status": "Completed"}\n', ":1: not a line result"),
    (b"\xff\xfe".decode("latin-1"), "cannot read"),
])
def test_damaged_lines_are_exit_2_with_the_line_number(tmp_path: Path, text: str, message: str) -> None:
    from llmops_ci.core.errors import UsageError

    folder = tmp_path / "runs" / "qa" / "evals" / "judge"
    folder.mkdir(parents=True)
    (folder / "lines.jsonl").write_bytes(text.encode("latin-1"))
    with pytest.raises(UsageError) as caught:
        scored_lines(tmp_path, "qa", "judge", "correct")
    assert message in str(caught.value) and "run the evaluation again" in str(caught.value)


# --- run figures, rounding, clustered thresholds -----------------------------------------------------------------

def test_every_run_figure_can_be_gated(cli: Cli, gate_project: GateProject) -> None:
    figures = {"latency_p50": 1.25, "latency_p95": 3.5, "duration_s": 42.0, "tokens_prompt": 900,
               "tokens_completion": 100, "tokens_total": 1000, "lines_failed": 2, "lines_failed_ratio": 0.02}
    proj = gate_project({f"run.{name}": Rule(max=value) for name, value in figures.items()})
    write_state(proj.path(".llmops"), {0: 1.0}, run={
        "name": "r", "status": "completed", "lines_total": 100, "lines_failed": 2, "latency_p50": 1.25,
        "latency_p95": 3.5, "duration_s": 42.0, "tokens": {"prompt": 900, "completion": 100, "total": 1000}})
    assert cli("gate").code == 0
    assert {c["metric"]: c["value"] for c in gate_json(proj)["checks"]} == {f"run.{k}": v for k, v in figures.items()}


@pytest.mark.parametrize("run", [
    {"lines_total": 0, "lines_failed": 0},
    {"lines_failed": 1},
])
def test_a_failed_ratio_without_numbers_is_no_metric(run: dict[str, Any], cli: Cli,
                                                    gate_project: GateProject) -> None:
    proj = gate_project({"run.lines_failed_ratio": Rule(max=0.5)})
    write_state(proj.path(".llmops"), {0: 1.0}, run={"name": "r", "status": "completed", **run})
    result = cli("gate")
    assert result.code == 2 and "no such metric" in result.err


def test_row_statistics_are_rounded_to_six_decimals() -> None:
    comparison = Comparison(20, 0, 0, 1 / 3, (-0.5, 0.5), "inconclusive", p_value=0.123456789, p_raw=0.123456789)
    (check,) = paired_checks("judge.accuracy", GateRule("judge.accuracy", max_drop=0.5), 0.9, 1.0, comparison,
                             output="s", note="paired by inputs")
    assert (check.metric, check.line_delta, check.p_value) == ("judge.accuracy", 0.333333, 0.123457)
    assert check.note == "paired by inputs"
    bare = Comparison(5, 0, 0, None, None, "too few lines")
    (check,) = paired_checks("m", GateRule("m", max_drop=0.5), 0.9, 1.0, bare, output="s")
    assert check.line_delta is None and check.p_value is None and check.interval is None


def test_a_clustered_threshold_row_shows_the_cluster_robust_interval(tmp_path: Path) -> None:
    from llmops_ci.config import load_config
    from llmops_ci.gate.verdict import gate_flow
    from tests.gate.test_gate_stats import write_state as write_keyed

    scores = {f"q{i}": float(i % 3 != 0) for i in range(12)}
    docs = {f"q{i}": f"d{i // 2}" for i in range(12)}
    judged({"judge.accuracy": Rule(min=0.5)}, cluster="${data.doc}").write(tmp_path / "llmops.yaml")
    flow = load_config(tmp_path / "llmops.yaml", {}).flows["qa"]
    state = write_keyed(tmp_path / "state", {"correct": scores}, clusters=docs)
    summary = json.loads((state / "summary.json").read_text())
    (row,) = gate_flow(flow, state, Summary.parse(summary), None).checks
    assert (row.method, row.clusters, row.lines) == ("cluster-robust-t", 6, 12)
    assert row.interval is not None and row.interval[0] < 2 / 3 < row.interval[1]
    assert row.interval_of == "mean per-line 'correct'"
    unclustered = dataclasses.replace(flow, cluster=None)
    (row,) = gate_flow(unclustered, state, Summary.parse(summary), None).checks
    assert (row.method, row.clusters) == ("wilson", None)


def test_a_failed_ratio_needs_two_numbers() -> None:
    from llmops_ci.gate.verdict import _run_figure
    from llmops_ci.results.summary import RunResult

    assert _run_figure(RunResult.parse({"lines_total": 10, "lines_failed": "2"}), "lines_failed_ratio") is None
    assert _run_figure(RunResult.parse({"lines_total": True, "lines_failed": 1}), "lines_failed_ratio") is None
    assert _run_figure(RunResult.parse({"lines_total": 4, "lines_failed": 1}), "lines_failed_ratio") == 0.25
    assert _run_figure(RunResult.parse({"lines_total": 4}), "no_such_figure") is None
    assert math.isnan(_run_figure(RunResult.parse({"latency_p95": "slow"}), "latency_p95") or 0.0)


# --- the baseline argument and what is written --------------------------------------------------------------------

def test_load_baseline_from_a_state_dir_or_its_summary(tmp_path: Path) -> None:
    from llmops_ci.gate.verdict import load_baseline

    assert load_baseline(None) is None
    root = write_state(tmp_path / "main", {0: 1.0})
    from_dir = load_baseline(root)
    assert from_dir is not None and from_dir.state_dir == root and from_dir.source == str(root)
    assert from_dir.summary.flows["qa"].evaluations["judge"].metrics == {"accuracy": 1.0}
    from_file = load_baseline(root / "summary.json")
    assert from_file is not None and from_file.state_dir is None and from_file.summary == from_dir.summary


@pytest.mark.parametrize(("text", "says"), [
    (None, "not found; pass the state dir (or its summary.json) of a run on the target branch"),
    ("{not json", "--baseline "),
    ('{"schema": "llmops-ci/summary@1", "flows": []}', "--baseline "),
])
def test_a_bad_baseline_is_exit_2_naming_the_option(tmp_path: Path, text: str | None, says: str) -> None:
    from llmops_ci.core.errors import UsageError
    from llmops_ci.gate.verdict import load_baseline

    path = tmp_path / "summary.json"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError) as caught:
        load_baseline(path)
    assert str(caught.value).startswith("--baseline ") and says in str(caught.value)


def test_gate_json_keeps_baseline_and_verdict_even_when_empty() -> None:
    from llmops_ci.gate.verdict import Check, FlowGate

    check = Check("m", 0.5, None, "min", 0.4, True, None)
    assert check.to_json() == {"metric": "m", "value": 0.5, "baseline": None, "rule": "min", "limit": 0.4,
                               "passed": True, "verdict": None}
    gate = FlowGate("qa", [check])
    assert gate.to_json() == {"passed": True, "checks": [check.to_json()], "changed_rules": []}
    gate.checks.append(Check("m", 0.5, None, "max", 0.45, False, None))
    gate.baseline, gate.provenance = {"source": "x"}, {"commit": "abc"}
    out = gate.to_json()
    assert out["passed"] is False and out["baseline"] == {"source": "x"} and out["provenance"] == {"commit": "abc"}
    assert FlowGate("empty").passed is True
