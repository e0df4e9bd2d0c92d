"""The gate on state dirs written directly: thresholds, baselines, paired intervals and verdicts."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.config import GateRule
from llmops_ci.gate.verdict import compare
from tests.gate.conftest import GateProject, run_name
from tests.helpers.config import Rule, judged, raw_rules
from tests.helpers.projects import CliResult, Project

Cli = Callable[..., CliResult]


def write_state(root: Path, accuracy_lines: dict[int, float], run: dict | None = None) -> Path:
    """A state dir as batch-run + eval-run leave it, with per-line 'correct' scores."""
    values = list(accuracy_lines.values())
    metrics = {"accuracy": round(sum(values) / len(values), 4) if values else 0.0}
    summary = {"schema": "llmops-ci/summary@1", "flows": {"qa": {
        "run": run or {"name": run_name(root), "status": "completed", "lines_total": 100, "lines_failed": 2,
                       "latency_p95": 3.5, "tokens": {"prompt": 900, "completion": 100, "total": 1000}},
        "evaluations": {"judge": {"run": "e", "status": "completed", "metrics": metrics}}}}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.json").write_text(json.dumps(summary))
    lines = root / "runs" / "qa" / "evals" / "judge"
    lines.mkdir(parents=True, exist_ok=True)
    (lines / "lines.jsonl").write_text("".join(
        json.dumps({"line": i, "status": "Completed", "outputs": {"correct": v}}) + "\n"
        for i, v in accuracy_lines.items()))
    return root


def gate_json(proj: Project) -> dict:
    return json.loads(proj.read(".llmops/summary.json"))["flows"]["qa"]["gate"]


@pytest.mark.parametrize(("rule", "code"), [
    ("judge.accuracy: {min: 0.75}", 0),   # value 0.75: the boundary passes
    ("judge.accuracy: {min: 0.7501}", 1),
    ("judge.accuracy: {max: 0.75}", 0),
    ("judge.accuracy: {max: 0.7499}", 1),
    ("run.lines_failed: {max: 2}", 0),
    ("run.lines_failed: {max: 1}", 1),
    ("run.tokens_total: {max: 999}", 1),
    ("run.latency_p95: {max: 3.5}", 0),
    ("run.lines_failed_ratio: {max: 0.02}", 0),
])
def test_thresholds_at_the_boundary(rule: str, code: int, cli: Cli, gate_project: GateProject) -> None:
    proj = gate_project(raw_rules(rule))
    write_state(proj.path(".llmops"), {0: 1, 1: 1, 2: 1, 3: 0})
    result = cli("gate")
    assert result.code == code, result.err
    (check,) = gate_json(proj)["checks"]
    assert check["passed"] is (code == 0)
    assert check["verdict"] is None and check["baseline"] is None


def bernoulli(n: int, p: float, seed: int) -> dict[int, float]:
    rng = random.Random(seed)
    return {i: float(rng.random() < p) for i in range(n)}


def test_real_regression_on_200_lines_fails_as_degraded(cli: Cli, gate_project: GateProject,
                                                        tmp_path: Path) -> None:
    proj = gate_project({"judge.accuracy": Rule(min=0.5, max_drop=0.03)})
    base = bernoulli(200, 0.85, seed=1)
    broken = [i for i, v in base.items() if v == 1.0][:30]  # the change breaks 30 lines that used to pass
    current = {i: 0.0 if i in broken else v for i, v in base.items()}
    write_state(proj.path(".llmops"), current)
    write_state(tmp_path / "main", base)
    result = cli("gate", "--baseline", str(tmp_path / "main"))
    assert result.code == 1
    checks = {c["rule"]: c for c in gate_json(proj)["checks"]}
    drop = checks["max_drop"]
    assert drop["verdict"] == "degraded" and drop["passed"] is False
    assert drop["lines"] == 200 and drop["delta"] == pytest.approx(-0.15)
    low, high = drop["interval"]
    assert low < -0.15 < high < 0
    assert checks["min"]["passed"] is True
    assert "degraded" in result.err and "FAIL" in result.err


def test_noise_on_30_lines_is_underpowered_and_passes_a_significant_rule(
        cli: Cli, gate_project: GateProject, tmp_path: Path) -> None:
    proj = gate_project({"judge.accuracy": Rule(max_drop=0.03, significant=True)})
    write_state(proj.path(".llmops"), bernoulli(30, 0.7, seed=12))
    write_state(tmp_path / "main", bernoulli(30, 0.7, seed=11))
    result = cli("gate", "--baseline", str(tmp_path / "main"))
    (check,) = gate_json(proj)["checks"]
    assert check["delta"] < -0.03  # a plain rule would have failed
    # not "inconclusive": 30 lines of 0/1 scores cannot detect a 0.03 drop (issue #25: say so)
    assert check["verdict"] == "underpowered" and check["mde"] > 0.03 and check["method"] == "mcnemar"
    assert check["interval"][0] < 0 < check["interval"][1]
    assert result.code == 0 and check["passed"] is True


def test_plain_rule_fails_on_the_same_noise(cli: Cli, gate_project: GateProject, tmp_path: Path) -> None:
    proj = gate_project({"judge.accuracy": Rule(max_drop=0.03)})
    write_state(proj.path(".llmops"), bernoulli(30, 0.7, seed=12))
    write_state(tmp_path / "main", bernoulli(30, 0.7, seed=11))
    assert cli("gate", "--baseline", str(tmp_path / "main")).code == 1


def test_lines_missing_on_either_side_are_counted(cli: Cli, gate_project: GateProject,
                                                  tmp_path: Path) -> None:
    proj = gate_project({"judge.accuracy": Rule(max_drop=0.1)})
    current = {i: 1.0 for i in range(0, 40)}  # lines 0..39
    base = {i: 1.0 for i in range(5, 45)}  # lines 5..44
    write_state(proj.path(".llmops"), current)
    write_state(tmp_path / "main", base)
    assert cli("gate", "--baseline", str(tmp_path / "main")).code == 0
    (check,) = gate_json(proj)["checks"]
    assert check["lines"] == 35 and check["verdict"] == "unchanged"
    assert check["note"].startswith("5 line(s) only in this run, 5 only in the baseline")


def test_no_baseline_and_summary_only_baseline(cli: Cli, gate_project: GateProject,
                                              tmp_path: Path) -> None:
    proj = gate_project({"judge.accuracy": Rule(max_drop=0.01, significant=True)})
    write_state(proj.path(".llmops"), {0: 1.0, 1: 0.0})
    assert cli("gate").code == 0
    (check,) = gate_json(proj)["checks"]
    assert (check["verdict"], check["passed"]) == ("no baseline", True)
    write_state(tmp_path / "main", {0: 1.0, 1: 1.0})
    result = cli("gate", "--baseline", str(tmp_path / "main" / "summary.json"))
    (check,) = gate_json(proj)["checks"]
    assert result.code == 1 and check["delta"] == -0.5
    assert "judged on the plain delta" in check["note"] and check.get("interval") is None


def test_a_baseline_that_is_this_very_run_is_refused(cli: Cli, gate_project: GateProject, tmp_path: Path) -> None:
    """Its own state dir, or a copy of it, as --baseline: every drop would be 0 and every rule pass. A flow whose
    results were carried over from the baseline (not run: unchanged) is that run by design, and is gated."""
    proj = gate_project({"judge.accuracy": Rule(max_drop=0.01)})
    state = write_state(proj.path(".llmops"), {0: 1.0, 1: 0.0})
    for baseline in (state, state / "summary.json"):
        result = cli("gate", "--baseline", str(baseline))
        assert result.code == 2, result.err
        assert f"its run of flow 'qa' is this very run ({run_name(state)})" in result.err
    copy = tmp_path / "copy"
    shutil.copytree(state, copy)
    assert cli("gate", "--baseline", str(copy)).code == 2
    summary = json.loads((state / "summary.json").read_text())
    summary["flows"]["qa"]["unchanged"] = {"since": "main", "carried_over": True, "baseline": str(copy)}
    (state / "summary.json").write_text(json.dumps(summary))
    result = cli("gate", "--baseline", str(copy))
    assert result.code == 0, result.err
    assert gate_json(proj)["checks"][0]["baseline"] == 0.5


@pytest.mark.parametrize(("rule", "message"), [
    ("judge.acuracy: {min: 0.5}", "no such metric in .llmops; available: judge.accuracy"),
    ("run.tokens: {max: 5}", "available: run.lines_failed, run.lines_failed_ratio"),
    ("judges.accuracy: {min: 0.5}", "no evaluation 'judges' in the config; rules can name: run.lines_failed"),
])
def test_unknown_metric_is_exit_2(rule: str, message: str, cli: Cli, gate_project: GateProject) -> None:
    proj = gate_project(raw_rules(rule))
    write_state(proj.path(".llmops"), {0: 1.0})
    result = cli("gate")
    assert result.code == 2 and message in result.err


def test_missing_evaluation_results_and_bad_baseline(cli: Cli, gate_project: GateProject,
                                                     tmp_path: Path) -> None:
    proj = gate_project({"judge.accuracy": Rule(min=0.5)})
    proj.write(".llmops/summary.json", '{"schema": "llmops-ci/summary@1"}')
    assert "run 'llmops-ci eval-run --flow qa' first" in cli("gate").err
    write_state(proj.path(".llmops"), {0: 1.0})
    result = cli("gate", "--baseline", str(tmp_path / "nope"))
    assert result.code == 2 and "not found" in result.err


def test_reproducible() -> None:
    rule = GateRule("judge.accuracy", max_drop=0.02)
    # scores on a 1-5 scale: the bootstrap (0/1 scores take McNemar's exact test, which has no seed)
    rng = random.Random(5)
    a = {i: 1 + 4 * v + rng.random() for i, v in bernoulli(100, 0.8, 3).items()}
    b = {i: 1 + 4 * v + rng.random() for i, v in bernoulli(100, 0.75, 4).items()}
    assert compare(a, b, rule) == compare(a, b, rule)
    assert compare(a, b, rule).method == "paired-bootstrap"
    assert compare(a, b, rule).interval != compare(a, b, rule, seed=1).interval


def test_direction_of_lower_is_better_metrics() -> None:
    slower = {i: 2.0 for i in range(20)}
    faster = {i: 1.0 for i in range(20)}
    rule = GateRule("run.latency", max_rise=0.5)
    assert compare(slower, faster, rule).verdict == "degraded"
    assert compare(faster, slower, rule).verdict == "improved"
    assert compare(faster, faster, rule).verdict == "unchanged"
    assert compare({0: 1.0}, {0: 1.0}, rule).verdict == "too few lines"


def test_interval_and_delta_say_their_scales(cli: Cli, project: Callable[..., Project], tmp_path: Path) -> None:
    # evaluation/eval-chat-math: each line scores 1 or -1, the metric is the share of 1s (on another scale)
    config = judged({"judge.accuracy": Rule(min=0.5, max_drop=0.05, significant=True)}, scores={"accuracy": "score"})
    proj = project(config=config, base=False)

    def state(root: Path, right: int) -> None:
        scores = {i: 1 if i < right else -1 for i in range(20)}
        write_state(root, scores)
        summary = json.loads((root / "summary.json").read_text())
        summary["flows"]["qa"]["evaluations"]["judge"]["metrics"] = {"accuracy": right / 20}
        (root / "summary.json").write_text(json.dumps(summary))
        lines = root / "runs" / "qa" / "evals" / "judge" / "lines.jsonl"
        lines.write_text(lines.read_text().replace('"correct"', '"score"'))

    state(proj.path(".llmops"), 4)
    state(tmp_path / "main", 15)
    result = cli("gate", "--baseline", str(tmp_path / "main"))
    assert result.code == 1
    drop, threshold = sorted(gate_json(proj)["checks"], key=lambda c: c["rule"])
    assert drop["delta"] == pytest.approx(-0.55)  # the metric's scale: 0.2 - 0.75
    assert drop["line_delta"] == pytest.approx(-1.1)  # the per-line score's: mean of the paired differences
    low, high = drop["interval"]
    assert low < -1.1 < high < 0 and drop["interval_of"] == "mean per-line difference of 'score'"
    assert drop["significant"] is True and drop["passed"] is False
    assert threshold["rule"] == "min" and "interval" not in threshold and threshold["verdict"] is None
    table = result.err[result.err.index("metric"):]
    (row,) = [line for line in table.splitlines() if line.startswith("judge.accuracy") and "max_drop" in line]
    assert "max_drop 0.05, significant: true" in row and "-1.1 [" in row and "per line" in row
