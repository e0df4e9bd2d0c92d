"""Verdict statistics (issue #25), each against numbers worked out by hand in the comments.

Clusters, Holm over many metrics, McNemar's exact p, pairing by line key after reordering, mde and
``underpowered``, non-inferiority; through ``compare`` and through ``llmops-ci gate`` on written state dirs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmops_ci.config import GateRule
from llmops_ci.gate.keys import inputs_key
from llmops_ci.gate.stats import (
    adjust_family,
    cluster_se,
    compare,
    holm,
    lines_needed,
    mcnemar_exact_p,
    newcombe_paired,
    t_cdf,
    t_ppf,
    wilson,
)
from llmops_ci.results.summary import Summary
from tests.gate.conftest import run_name
from tests.helpers.config import Config, Flow, Rule, judged, raw_rules
from tests.helpers.projects import BASE_CONFIG, CliResult, Project

Cli = Callable[..., CliResult]


def write_state(root: Path, scores: dict[str, dict[str, float]], *, clusters: dict[str, str] | None = None,
                keys: str = "inputs", order: list[str] | None = None, metrics: dict[str, float] | None = None,
                gate: dict[str, Any] | None = None, run: dict[str, Any] | None = None) -> Path:
    """A state dir as batch-run + eval-run leave it. ``scores``: per-line output -> {line id: score}; the line id
    is the line's mapped input ``q``; ``order`` the data order (line numbers follow it)."""
    ids = order or list(next(iter(scores.values())))
    values = {out: [per_line[i] for i in ids] for out, per_line in scores.items()}
    metrics = metrics or {"accuracy": sum(values["correct"]) / len(ids)}
    flow: dict[str, Any] = {"run": run or {"name": run_name(root), "status": "completed", "lines_total": len(ids),
                                           "lines_failed": 0},
                            "evaluations": {"judge": {"run": "e", "status": "completed", "metrics": metrics}}}
    if gate is not None:
        flow["gate"] = gate
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.json").write_text(json.dumps({"schema": "llmops-ci/summary@1", "flows": {"qa": flow}}))
    runs = root / "runs" / "qa"
    (runs / "evals" / "judge").mkdir(parents=True, exist_ok=True)
    (runs / "lines.jsonl").write_text("".join(json.dumps({"line": n, "status": "Completed", "inputs": {"q": i},
                                                          "outputs": {}}) + "\n" for n, i in enumerate(ids)))
    (runs / "evals" / "judge" / "lines.jsonl").write_text("".join(
        json.dumps({"line": n, "status": "Completed", "outputs": {out: scores[out][i] for out in scores}}) + "\n"
        for n, i in enumerate(ids)))
    if clusters is not None or keys != "inputs":
        (runs / "line_keys.json").write_text(json.dumps({
            "line_key": keys, "cluster": "${data.doc}" if clusters is not None else None,
            "lines": [{"line": n, "key": i if keys != "inputs" else inputs_key({"q": i}),
                       "inputs": inputs_key({"q": i}), "cluster": (clusters or {}).get(i)}
                      for n, i in enumerate(ids)]}))
    return root


def gate_json(proj: Project) -> dict[str, Any]:
    return json.loads(proj.read(".llmops/summary.json"))["flows"]["qa"]["gate"]


def binary_lines(both: int, gains: int, losses: int, neither: int) -> tuple[dict[str, float], dict[str, float]]:
    """(current, baseline) 0/1 scores with the given 2x2 table (gains: 0 -> 1, losses: 1 -> 0)."""
    cells = [(1.0, 1.0)] * both + [(1.0, 0.0)] * gains + [(0.0, 1.0)] * losses + [(0.0, 0.0)] * neither
    return ({f"l{i}": c for i, (c, _) in enumerate(cells)}, {f"l{i}": b for i, (_, b) in enumerate(cells)})


# --- McNemar and Wilson -------------------------------------------------------------------------------------

def test_mcnemar_exact_p_by_hand() -> None:
    # 11 discordant pairs, 2 gains and 9 losses: 2 * P(X <= 2), X ~ Bin(11, 1/2) = 2 * (1 + 11 + 55) / 2048
    assert mcnemar_exact_p(2, 9) == pytest.approx(134 / 2048)
    # 1 gain, 10 losses: 2 * (1 + 11) / 2048
    assert mcnemar_exact_p(1, 10) == pytest.approx(24 / 2048)
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(5, 5) == 1.0


def test_binary_case_uses_mcnemar_exact_p() -> None:
    current, baseline = binary_lines(both=25, gains=2, losses=9, neither=4)
    c = compare(current, baseline, GateRule("j.acc", max_drop=0.05))
    assert c.method == "mcnemar" and c.lines == 40
    assert c.p_value == pytest.approx(134 / 2048)  # 0.0654: not shown at 5%
    assert c.delta == pytest.approx(-7 / 40)
    assert c.verdict in ("inconclusive", "underpowered")
    current, baseline = binary_lines(both=25, gains=1, losses=10, neither=4)
    c = compare(current, baseline, GateRule("j.acc", max_drop=0.05))
    assert c.p_value == pytest.approx(24 / 2048) and c.verdict == "degraded"


def test_improved_and_inconclusive_by_hand() -> None:
    current, baseline = binary_lines(both=25, gains=10, losses=1, neither=4)
    c = compare(current, baseline, GateRule("j.acc", max_drop=0.05))
    assert c.p_value == pytest.approx(24 / 2048) and c.delta == pytest.approx(9 / 40) and c.verdict == "improved"
    # 20 lines scored 0-1: 4 drop by 0.5, 1 rises by 0.5, 15 unchanged: mean -0.075, sd of the differences
    # sqrt((1.25 - 20 * 0.075²) / 19) = 0.244704, se 0.054716, mde 2.8016 * 0.054716 = 0.153291 <= 0.16: the data
    # could see a 0.16 drop, does not show a change (p 0.23), and its interval reaches below -0.16
    base = {i: 0.5 for i in range(20)}
    cur = {i: 0.5 - (0.5 if i < 4 else 0.0) + (0.5 if i == 4 else 0.0) for i in range(20)}
    c = compare(cur, base, GateRule("j.s", max_drop=0.16))
    assert c.mde == pytest.approx(0.153291, abs=2e-5) and c.p_value > 0.05
    assert c.interval is not None and c.interval[0] < -0.16 < c.interval[1]
    assert c.verdict == "inconclusive"


def test_mcnemar_mde_by_hand() -> None:
    # 100 lines, 12 discordant (psi 0.12): Connor's formula with psi + d under the change, solved for d:
    # d = (1.96 * sqrt(0.12 + d) + 0.8416 * sqrt(0.12 + d - d²)) / 10 -> 0.14161
    current, baseline = binary_lines(both=70, gains=3, losses=9, neither=18)
    c = compare(current, baseline, GateRule("j.acc", max_drop=0.1))
    d = c.mde
    assert d == pytest.approx(0.14161, abs=1e-5)
    assert d == pytest.approx((1.959964 * (0.12 + d) ** 0.5 + 0.841621 * (0.12 + d - d * d) ** 0.5) / 10, abs=1e-5)
    assert c.p_value == pytest.approx(598 / 4096) and c.verdict == "underpowered"


def test_wilson_interval_by_hand() -> None:
    # 155/200 at z = 1.6449: centre (0.775 + z²/400) / (1 + z²/200) = 0.771330, half-width 0.048384
    low, high = wilson(155, 200, 1.6448536269514722)
    assert low == pytest.approx(0.72295, abs=1e-5) and high == pytest.approx(0.81971, abs=1e-5)
    assert wilson(0, 10)[0] == pytest.approx(0.0) and wilson(10, 10)[1] == pytest.approx(1.0)


# --- clusters ------------------------------------------------------------------------------------------------

def _one_document_drops() -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """10 documents x 10 lines; only document 0's lines drop, by 0.5 each: the mean change is -0.05."""
    baseline = {f"d{d}q{q}": 0.8 for d in range(10) for q in range(10)}
    current = {k: v - (0.5 if k.startswith("d0q") else 0.0) for k, v in baseline.items()}
    return current, baseline, {k: k.split("q")[0] for k in baseline}


def test_cluster_robust_se_by_hand() -> None:
    # deviations of the cluster sums from n_g * mean (-0.05 * 10 = -0.5): -4.5 once and 0.5 nine times;
    # CR1: sqrt(10/9 * (20.25 + 9 * 0.25)) / 100 = sqrt(25) / 100 = 0.05 (the naive SE is 0.0151, 3.3x smaller)
    current, baseline, clusters = _one_document_drops()
    groups: dict[str, list[float]] = {}
    for k in baseline:
        groups.setdefault(clusters[k], []).append(current[k] - baseline[k])
    assert cluster_se(list(groups.values())) == pytest.approx(0.05)


def test_student_t_by_hand() -> None:
    # printed tables: t(0.975, 9) = 2.2622, t(0.8, 9) = 0.8834, T3(2) = 0.9303, t(0.975, inf) -> 1.96
    assert t_ppf(0.975, 9) == pytest.approx(2.2622, abs=1e-4) and t_ppf(0.8, 9) == pytest.approx(0.8834, abs=1e-4)
    assert t_cdf(2.0, 3) == pytest.approx(0.9303, abs=1e-4) and t_ppf(0.975, 10**6) == pytest.approx(1.96, abs=1e-3)


def test_clustered_drop_is_degraded_naively_but_not_with_clusters() -> None:
    current, baseline, clusters = _one_document_drops()
    rule = GateRule("j.acc", max_drop=0.02, significant=True)
    naive = compare(current, baseline, rule)
    # the naive bootstrap sees a drop in every resample that holds a document-0 line: P(none) = 0.9^100
    assert naive.method == "paired-bootstrap" and naive.verdict == "degraded" and naive.p_value < 0.001
    clustered = compare(current, baseline, rule, clusters=clusters)
    # cluster-robust: t = -0.05 / 0.05 = -1 on 9 df, p = 2 * (1 - T9(1)) = 2 * (1 - 0.828282) = 0.343436;
    # interval -0.05 ± t(0.975, 9) * 0.05 = -0.05 ± 2.262157 * 0.05
    assert clustered.method == "cluster-robust-t" and clustered.clusters == 10
    assert clustered.p_value == pytest.approx(0.343436, abs=1e-5)
    assert clustered.interval == pytest.approx((-0.163108, 0.063108), abs=1e-5)
    # mde = (t(0.975, 9) + t(0.8, 9)) * 0.05 = (2.262157 + 0.883404) * 0.05 = 0.157278 > the 0.02 limit
    assert clustered.mde == pytest.approx(0.157278, abs=1e-5)
    assert clustered.verdict == "underpowered"


def test_clustered_gate_through_the_cli(cli: Cli, project: Callable[..., Project], tmp_path: Path) -> None:
    current, baseline, clusters = _one_document_drops()
    rules = {"judge.accuracy": Rule(max_drop=0.02, significant=True)}
    naive = project(config=judged(rules), base=False)
    write_state(naive.path(".llmops"), {"correct": current})
    write_state(tmp_path / "main", {"correct": baseline}, clusters=clusters)
    assert cli("gate", "--baseline", str(tmp_path / "main")).code == 1
    (row,) = gate_json(naive)["checks"]
    assert row["verdict"] == "degraded" and row["method"] == "paired-bootstrap" and row["passed"] is False

    judged(rules, cluster="${data.doc}").write(naive.path("llmops.yaml"))
    write_state(naive.path(".llmops"), {"correct": current}, clusters=clusters)
    result = cli("gate", "--baseline", str(tmp_path / "main"))
    assert result.code == 0, result.err
    (row,) = gate_json(naive)["checks"]
    assert row["verdict"] == "underpowered" and row["clusters"] == 10 and row["method"] == "cluster-robust-t"
    assert row["mde"] == pytest.approx(0.157278, abs=1e-5) and row["passed"] is True
    assert "10 clusters" in result.err


def test_cluster_set_without_recorded_clusters_is_exit_2(cli: Cli, project: Callable[..., Project],
                                                         tmp_path: Path) -> None:
    current, baseline, _ = _one_document_drops()
    proj = project(config=judged({"judge.accuracy": Rule(max_drop=0.02)}, cluster="${data.doc}"),
                   base=False)
    write_state(proj.path(".llmops"), {"correct": current})
    write_state(tmp_path / "main", {"correct": baseline})
    result = cli("gate", "--baseline", str(tmp_path / "main"))
    assert result.code == 2 and "batch-run --flow qa' again" in result.err


# --- many metrics ---------------------------------------------------------------------------------------------

def test_holm_by_hand() -> None:
    # sorted p x (m - rank), made monotone: 0.01*8, 0.02*7, 0.03*6, 0.04*5, 0.2*4, 0.3*3, 0.5*2 -> 1, 0.9 -> 1
    assert holm([0.04, 0.5, 0.01, 0.3, 0.02, 0.9, 0.03, 0.2]) == pytest.approx(
        [0.2, 1.0, 0.08, 0.9, 0.14, 1.0, 0.18, 0.8])


def _eight_metrics() -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """A no-change PR over 8 metrics where one shows McNemar p = 2 * (1 + 9) / 512 = 0.039 by chance."""
    cur, base = {}, {}
    for m in range(8):
        c, b = binary_lines(both=20, gains=1, losses=8, neither=11) if m == 0 else binary_lines(30, 0, 0, 10)
        cur[f"c{m}"], base[f"c{m}"] = c, b
    return cur, base


def test_no_change_pr_over_8_metrics_with_holm() -> None:
    cur, base = _eight_metrics()
    rule = GateRule("j.m", max_drop=0.01, significant=True)
    raw = {f"j.m{m}": compare(cur[f"c{m}"], base[f"c{m}"], rule) for m in range(8)}
    assert raw["j.m0"].p_value == pytest.approx(20 / 512) and raw["j.m0"].verdict == "degraded"
    family = adjust_family(raw, "holm")
    # Holm: 8 * 0.039 = 0.3125 for the smallest; the others stay at 1
    assert family["j.m0"].p_value == pytest.approx(8 * 20 / 512) and family["j.m0"].p_raw == pytest.approx(20 / 512)
    assert family["j.m0"].verdict != "degraded"
    assert adjust_family(raw, "none")["j.m0"].verdict == "degraded"


@pytest.mark.parametrize(("family", "code"), [(None, 0), ("none", 1)])
def test_eight_metric_gate_through_the_cli(family: str | None, code: int, cli: Cli, project: Callable[..., Project],
                                           tmp_path: Path) -> None:
    cur, base = _eight_metrics()
    rules = {f"judge.m{m}": Rule(max_drop=0.01, significant=True) for m in range(8)}
    scores = {f"m{m}": f"c{m}" for m in range(8)}
    proj = project(config=judged(rules, scores=scores, gate_family=family), base=False)
    write_state(proj.path(".llmops"), cur, metrics={f"m{m}": sum(cur[f"c{m}"].values()) / 40 for m in range(8)})
    write_state(tmp_path / "main", base, metrics={f"m{m}": sum(base[f"c{m}"].values()) / 40 for m in range(8)})
    result = cli("gate", "--baseline", str(tmp_path / "main"))
    assert result.code == code, result.err
    row = next(c for c in gate_json(proj)["checks"] if c["metric"] == "judge.m0")
    assert row["p_value"] == pytest.approx((8 if not family else 1) * 20 / 512, abs=1e-6)
    assert row["verdict"] == ("degraded" if family else "underpowered")


# --- pairing -----------------------------------------------------------------------------------------------

def test_reordered_data_pairs_by_key(cli: Cli, project: Callable[..., Project], tmp_path: Path) -> None:
    # the same 30 questions with the same scores, the data file reversed: by position every pair would differ
    proj = project(config=judged({"judge.accuracy": Rule(max_drop=0.05)}), base=False)
    scores = {f"q{i}": 0.5 * (i % 3) for i in range(30)}  # 0, 0.5, 1: the bootstrap, which has no width here
    write_state(proj.path(".llmops"), {"correct": scores}, order=[f"q{i}" for i in reversed(range(30))])
    write_state(tmp_path / "main", {"correct": scores})
    assert cli("gate", "--baseline", str(tmp_path / "main")).code == 0
    (row,) = gate_json(proj)["checks"]
    assert row["line_delta"] == 0.0 and row["interval"] == [0.0, 0.0] and row["verdict"] == "unchanged"
    assert row["lines"] == 30 and "note" not in row


def test_configured_line_key_and_lines_only_one_side_has(cli: Cli, project: Callable[..., Project],
                                                         tmp_path: Path) -> None:
    proj = project(config=judged({"judge.accuracy": Rule(max_drop=0.05)}, line_key="${data.id}"),
                   base=False)
    write_state(proj.path(".llmops"), {"correct": {f"q{i}": 1.0 for i in range(3, 30)}}, keys="${data.id}")
    write_state(tmp_path / "main", {"correct": {f"q{i}": 1.0 for i in range(0, 25)}}, keys="${data.id}")
    assert cli("gate", "--baseline", str(tmp_path / "main")).code == 0
    (row,) = gate_json(proj)["checks"]
    assert row["lines"] == 22 and row["note"].startswith("5 line(s) only in this run, 3 only in the baseline")


def test_old_baseline_without_keys_pairs_by_position_and_says_so(cli: Cli, project: Callable[..., Project],
                                                                 tmp_path: Path) -> None:
    proj = project(config=judged({"judge.accuracy": Rule(max_drop=0.05)}), base=False)
    write_state(proj.path(".llmops"), {"correct": {f"q{i}": 1.0 for i in range(20)}})
    old = write_state(tmp_path / "main", {"correct": {f"q{i}": 1.0 for i in range(20)}})
    (old / "runs" / "qa" / "lines.jsonl").unlink()
    assert cli("gate", "--baseline", str(old)).code == 0
    (row,) = gate_json(proj)["checks"]
    assert "paired by line number" in row["note"] and row["lines"] == 20


# --- power ------------------------------------------------------------------------------------------------

def test_mde_and_underpowered_by_hand() -> None:
    # 16 lines, differences +0.1 and -0.1 alternating: sd = sqrt(16 * 0.01 / 15) = 0.103280, se = 0.025820,
    # mde = (1.95996 + 0.84162) * 0.025820 = 0.072337
    base = {i: 0.5 for i in range(16)}
    cur = {i: 0.5 + (0.1 if i % 2 else -0.1) for i in range(16)}
    tight = compare(cur, base, GateRule("j.s", max_drop=0.04))
    assert tight.mde == pytest.approx(0.072337, abs=1e-5)
    assert tight.interval == (-0.05, 0.05) and tight.verdict == "underpowered"  # not inside ±0.04, limit < mde
    assert compare(cur, base, GateRule("j.s", max_drop=0.05)).verdict == "unchanged"  # inside ±0.05: shown
    # lines needed for mde 0.05 at that sd: ((1.95996 + 0.84162) * 0.10328 / 0.05)^2 = 33.5 -> 34
    assert lines_needed(0.05, 0.10328) == 34


def test_too_few_lines() -> None:
    assert compare({i: 1.0 for i in range(9)}, {i: 0.0 for i in range(9)}, GateRule("j.s", max_drop=0.1)).verdict \
        == "too few lines"


# --- non-inferiority -------------------------------------------------------------------------------------

def test_non_inferiority_bound_by_hand() -> None:
    # 200 lines: 150 right on both, 5 gained, 5 lost, 40 wrong on both. Wilson at z = 1.6449 for 155/200 is
    # [0.72295, 0.81971] on both sides; phi = (150*40 - 5*5) / (155*45) = 0.85663; the lower bound is
    # -sqrt(0.05205² - 2*0.85663*0.05205*0.04471 + 0.04471²) = -0.02686
    low, _ = newcombe_paired(150, 5, 5, 40, 1.6448536269514722)
    assert low == pytest.approx(-0.02686, abs=2e-5)


@pytest.mark.parametrize(("limit", "code", "verdict"), [(0.03, 0, "unchanged"), (0.02, 1, "underpowered")])
def test_non_inferiority_pass_and_fail(limit: float, code: int, verdict: str, cli: Cli,
                                       project: Callable[..., Project], tmp_path: Path) -> None:
    current, baseline = binary_lines(150, 5, 5, 40)
    proj = project(config=judged({"judge.accuracy": Rule(max_drop=limit, test="non_inferiority")}),
                   base=False)
    write_state(proj.path(".llmops"), {"correct": current})
    write_state(tmp_path / "main", {"correct": baseline})
    result = cli("gate", "--baseline", str(tmp_path / "main"))
    assert result.code == code, result.err
    (row,) = gate_json(proj)["checks"]
    assert row["bound"] == pytest.approx(-0.02686, abs=2e-5) and row["test"] == "non_inferiority"
    assert row["delta"] == 0.0 and row["passed"] is (code == 0)
    # shown non-inferior reads "unchanged"; not shown: the one-sided mde (Connor, psi 0.05, n 200: 0.0573) > 0.02
    assert row["verdict"] == verdict


def test_non_inferiority_without_a_baseline_fails(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project(config=judged({"judge.accuracy": Rule(max_drop=0.05, test="non_inferiority")}),
                   base=False)
    write_state(proj.path(".llmops"), {"correct": {f"q{i}": 1.0 for i in range(20)}})
    assert cli("gate").code == 1
    (row,) = gate_json(proj)["checks"]
    assert row["passed"] is False and "non-inferiority cannot be shown" in row["note"]


@pytest.mark.parametrize(("rule", "message"), [
    ("{min: 0.5, test: non_inferiority}", "needs the limit it tests"),
    ("{max_drop: 0.1, test: equivalence}", "must be one of: non_inferiority"),
    ("{max_drop: 0.1, test: non_inferiority, significant: true}", "significant"),
])
def test_rule_test_key_is_checked(rule: str, message: str, cli: Cli, project: Callable[..., Project]) -> None:
    project(config=judged(raw_rules(f"judge.accuracy: {rule}")), base=False)
    result = cli("gate")
    assert result.code == 2 and message in result.err and "llmops.yaml:" in result.err


def test_line_key_must_name_a_data_column(cli: Cli, project: Callable[..., Project]) -> None:
    project(config=judged({"judge.accuracy": Rule(min=0)}, line_key="id"), base=False)
    result = cli("gate")
    assert result.code == 2 and "${data.<column>}" in result.err


# --- provenance ---------------------------------------------------------------------------------------------

def test_baseline_provenance_and_changed_rules(cli: Cli, project: Callable[..., Project], tmp_path: Path) -> None:
    proj = project(config=judged({"judge.accuracy": Rule(min=0.5, max_drop=0.05)}), base=False)
    proj.write("flows/judge/flow.dag.yaml", "outputs: {}\n")
    proj.write("data.jsonl", '{"q": "q0"}\n')
    scores = {f"q{i}": 1.0 for i in range(20)}
    write_state(proj.path(".llmops"), {"correct": scores})
    old_gate = {"passed": True, "checks": [{"metric": "judge.accuracy", "rule": "min", "limit": 0.9},
                                           {"metric": "judge.accuracy", "rule": "max_drop", "limit": 0.05}],
                "provenance": {"commit": "abc123", "gated_at": "2026-01-01T00:00:00+00:00", "data_hash": "0ld",
                               "evaluation_hashes": {"judge": "0ldjudge"}}}
    write_state(tmp_path / "main", {"correct": scores}, gate=old_gate)
    result = cli("gate", "--baseline", str(tmp_path / "main"))
    assert result.code == 0, result.err
    gate = gate_json(proj)
    assert gate["changed_rules"] == [{"metric": "judge.accuracy", "rule": "min", "was": 0.9, "now": 0.5}]
    base = gate["baseline"]
    assert base["commit"] == "abc123" and base["age_s"] > 86400 and base["same_data"] is False
    assert base["same_evaluations"] is False
    assert any("data changed" in w for w in base["warnings"]) and any("judge changed" in w for w in base["warnings"])
    assert any("days old" in w for w in base["warnings"])
    assert gate["provenance"]["evaluation_hashes"]["judge"] and "min changed" in result.err
    comment = cli("comment").out
    assert "baseline" in comment and "abc123" in comment and "0.9 → 0.5" in comment and "judge changed" in comment
    assert math.isfinite(base["age_s"])


# --- lint ---------------------------------------------------------------------------------------------------

def test_never_detectable_by_hand() -> None:
    from llmops_ci.gate.stats import never_detectable

    assert "at least 10" in (never_detectable(3, 0.5) or "")
    # McNemar's smallest two-sided p with k discordant pairs all one way is 2 * 0.5^k: k = 6 gives 0.031 < 0.05
    assert never_detectable(50, 0.1) is not None  # 5 lines
    assert never_detectable(60, 0.1) is None  # 6 lines
    # over 8 metrics Holm's first step needs 2 * 0.5^k < 0.05 / 8: k = 9
    assert never_detectable(80, 0.1, 8) is not None and never_detectable(90, 0.1, 8) is None


def test_lint_warns_when_the_data_can_never_show_the_limit(cli: Cli, project: Callable[..., Project]) -> None:
    significant = BASE_CONFIG.with_flow("classify", gate={
        "accuracy.accuracy": Rule(min=0.8, max_drop=0.05, significant=True), "run.latency_p95": Rule(max=4.0)})
    text = significant.yaml()
    project(config=significant.with_flow("classify", line_key="${data.id}"))
    result = cli("lint", "--format", "json")
    findings = {f["rule"]: f for f in json.loads(result.out)["findings"]}
    power = findings["gate-underpowered"]
    assert power["severity"] == "warning" and "3 data lines" in power["message"]
    assert power["line"] == text.splitlines().index(
        next(line for line in text.splitlines() if "accuracy.accuracy" in line)) + 2  # one line added above
    assert "line_key: ${data.id} names a column the data does not have" in findings["mapping-column-unknown"][
        "message"]


# --- end to end through the real executor ---------------------------------------------------------------------

@pytest.mark.executor
def test_batch_run_keeps_line_keys_and_a_reordered_data_file_pairs_by_key(
        cli: Cli, project: Callable[..., Project], run_env: Any, tmp_path: Path) -> None:
    import shutil

    from tests.helpers.projects import RUN_CONFIG, RUN_PROJECT

    def data(ids: list[int]) -> str:
        return "".join(json.dumps({"id": f"q{i}", "doc": f"d{i // 4}", "text": chr(97 + i),
                                   "expected": "X" if i == 2 else chr(65 + i)}) + "\n" for i in ids)

    config = RUN_CONFIG.with_flow("echo", line_key="${data.id}", cluster="${data.doc}",
                                  gate={"match.match_rate": Rule(max_drop=0.05)}
                                  ).with_evaluation("echo", "match", scores={"match_rate": "score"})
    proj = project({**RUN_PROJECT, "data/echo.jsonl": data(list(range(12)))}, base=False, config=config)
    for step in ("batch-run", "eval-run"):
        assert (result := cli(step, "--flow", "echo")).code == 0, result.err
    keys = json.loads(proj.read(".llmops/runs/echo/line_keys.json"))
    assert keys["line_key"] == "${data.id}" and keys["cluster"] == "${data.doc}"
    assert [(x["line"], x["key"], x["cluster"]) for x in keys["lines"][:5]] == [
        (0, "q0", "d0"), (1, "q1", "d0"), (2, "q2", "d0"), (3, "q3", "d0"), (4, "q4", "d1")]
    shutil.move(proj.path(".llmops"), tmp_path / "main")
    # the PR reverses the data file and swaps question 11 for a new question 12
    proj.write("data/echo.jsonl", data([12, *reversed(range(11))]))
    for step in ("batch-run", "eval-run"):
        assert (result := cli(step, "--flow", "echo")).code == 0, result.err
    result = cli("gate", "--flow", "echo", "--baseline", str(tmp_path / "main"))
    assert result.code == 0, result.err
    (row,) = json.loads(proj.read(".llmops/summary.json"))["flows"]["echo"]["gate"]["checks"]
    # paired by id: 11 common lines with identical scores; by position, 11 of 12 pairs would be different questions
    assert row["lines"] == 11 and row["line_delta"] == 0.0
    assert row["note"].startswith("1 line(s) only in this run, 1 only in the baseline")
    assert row["clusters"] == 3 and row["method"] == "cluster-robust-t"  # d0, d1, d2 (q12 is d3, unpaired)


def test_paired_checks_for_any_reference() -> None:
    """against: rules compare with a sibling flow through the same two functions."""
    from llmops_ci.gate.verdict import paired_checks

    current, reference = binary_lines(both=25, gains=1, losses=10, neither=4)
    rule = GateRule("judge.accuracy", max_drop=0.05, test="non_inferiority")
    comparison = adjust_family({"judge.accuracy": compare(current, reference, rule)})["judge.accuracy"]
    (row,) = paired_checks("judge.accuracy", rule, 0.65, 0.875, comparison, output="correct")
    assert row.passed is False and row.verdict == "degraded" and row.method == "mcnemar"
    assert row.p_value == pytest.approx(24 / 2048, abs=1e-6) and row.bound is not None and row.bound < -0.05


def test_a_tampered_baseline_is_tolerated(cli: Cli, project: Callable[..., Project], tmp_path: Path) -> None:
    proj = project(config=judged({"judge.accuracy": Rule(min=0.5, max_drop=0.05)}), base=False)
    scores = {f"q{i}": 1.0 for i in range(20)}
    write_state(proj.path(".llmops"), {"correct": scores})
    # "passed"/"checks" of the wrong type make the summary itself invalid (exit 2, test_hostile_state); the
    # provenance a baseline carries is only read for the report: junk there is tolerated
    junk = {"passed": True, "checks": [], "provenance": {"commit": {"x": 1}, "gated_at": "never",
                                                          "data_hash": [], "evaluation_hashes": "judge"}}
    base = write_state(tmp_path / "main", {"correct": scores}, gate=junk)
    (base / "runs" / "qa" / "line_keys.json").write_text('{"line_key": null, "lines": "x"}')
    result = cli("gate", "--baseline", str(base))
    assert result.code == 0, result.err  # provenance only informs: junk there is shown as unknown
    # checks that are not a list of objects are a broken baseline: said, exit 2 (tests/results/test_hostile_state.py)
    write_state(tmp_path / "broken", {"correct": scores}, gate={**junk, "checks": 5})
    broken = cli("gate", "--baseline", str(tmp_path / "broken"))
    assert broken.code == 2 and "'gate.checks' of flow 'qa' must be a list of objects" in broken.err
    gate = gate_json(proj)
    assert gate["changed_rules"] == [] and gate["checks"][1]["lines"] == 20
    assert gate["baseline"]["age_s"] is None and gate["baseline"]["same_data"] is None


def test_against_rules_use_the_same_comparison(tmp_path: Path) -> None:
    """A rule with ``against: <flow>`` (the evaluators' parity gate) compares with the sibling flow of this run."""
    import dataclasses

    from llmops_ci.config import load_config
    from llmops_ci.gate.verdict import gate_flow

    @dataclasses.dataclass(frozen=True)
    class AgainstRule(GateRule):
        against: str | None = None

    judged({"judge.accuracy": Rule(max_drop=0.02)}).write(tmp_path / "llmops.yaml")
    flow = load_config(tmp_path / "llmops.yaml", {}).flows["qa"]
    flow = dataclasses.replace(flow, gate={"judge.accuracy": AgainstRule("judge.accuracy", max_drop=0.02,
                                                                          test="non_inferiority", against="old")})
    current, reference = binary_lines(150, 5, 5, 40)
    state = write_state(tmp_path / "state", {"correct": current})
    old = write_state(tmp_path / "other", {"correct": reference})
    summary = json.loads((state / "summary.json").read_text())
    summary["flows"]["old"] = json.loads((old / "summary.json").read_text())["flows"]["qa"]
    (state / "summary.json").write_text(json.dumps(summary))
    (old / "runs" / "qa").rename(state / "runs" / "old")  # the sibling flow's lines, in this run's state dir
    (row,) = gate_flow(flow, state, Summary.parse(summary), None).checks
    # the same numbers as test_non_inferiority_pass_and_fail: bound -0.02686 > -0.02 fails
    assert row.bound == pytest.approx(-0.02686, abs=2e-5) and row.passed is False
    assert row.note is not None and row.note.startswith("against flow 'old' in this run")


def test_threshold_rows_show_wilson_for_0_1_scores(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project(config=judged({"judge.accuracy": Rule(min=0.7)}), base=False)
    write_state(proj.path(".llmops"), {"correct": {f"q{i}": float(i < 15) for i in range(20)}})
    assert cli("gate").code == 0
    (row,) = gate_json(proj)["checks"]
    # Wilson 15/20: centre (0.75 + 1.96²/40) / (1 + 1.96²/20) = 0.70973, half-width 0.17843
    assert row["method"] == "wilson" and row["interval"] == pytest.approx([0.53130, 0.88816], abs=1e-4)
    assert row["passed"] is True and row["verdict"] is None and row["interval_of"] == "mean per-line 'correct'"


def test_clustered_0_1_mde_counts_the_variance_a_drop_adds() -> None:
    from llmops_ci.gate.stats import t_mde

    plain = t_mde(0.05, 9)  # (2.262157 + 0.883404) * 0.05 = 0.157278
    d = t_mde(0.05, 9, lines=100)
    assert plain == pytest.approx(0.157278, abs=1e-5) and d > plain
    assert d == pytest.approx(3.145561 * (0.05 ** 2 + (d - d * d) / 100) ** 0.5, abs=1e-5)


def test_mcnemar_mde_is_never_below_what_the_exact_test_can_show() -> None:
    """With no discordant line the sample-size formula has a root at 0 ("any change is detectable"); McNemar's
    exact test needs 6 lines flipping one way at two-sided 0.05 (2 * 0.5^6 < 0.05) and 5 one-sided."""
    from llmops_ci.gate.stats import Z_ONE_SIDED, mcnemar_mde

    assert mcnemar_mde(0.0, 42) >= 6 / 42
    assert mcnemar_mde(0.0, 42, Z_ONE_SIDED) >= 5 / 42
    assert mcnemar_mde(0.0, 42, Z_ONE_SIDED) < mcnemar_mde(0.0, 42)
    assert mcnemar_mde(0.1, 100) > mcnemar_mde(0.0, 100) > 0  # more discordance, more noise to see through


def test_a_sibling_flow_with_other_mapped_inputs_pairs_by_line(tmp_path: Path) -> None:
    """against: a flow mapping other columns of the same data (an agent's `input` vs the DAG's url and text) has
    default keys that never match: its lines pair by line number rather than not at all."""
    from llmops_ci.config import load_config
    from llmops_ci.gate.keys import INPUTS, LineKeys, pair

    (tmp_path / "flows").mkdir()
    (tmp_path / "data.jsonl").write_text('{"q": "a"}\n')
    Config(flows={"qa": Flow("flows", data="data.jsonl")}).write(tmp_path / "llmops.yaml")
    flow = load_config(tmp_path / "llmops.yaml").flows["qa"]
    mine = LineKeys(INPUTS, {0: "h-url-text-0", 1: "h-url-text-1"}, {0: "x", 1: "y"}, None, {})
    theirs = LineKeys(INPUTS, {0: "h-input-0", 1: "h-input-1"}, {0: "u", 1: "v"}, None, {})
    assert pair(flow, mine, theirs, same_data=True).kind == "line"
    assert pair(flow, mine, theirs).kind == INPUTS  # a baseline of the same flow still pairs by its keys
    keyed = LineKeys("${data.id}", {0: "a", 1: "b"}, {}, None, {})
    assert pair(flow, keyed, keyed, same_data=True).kind == "${data.id}"  # a configured line_key pairs siblings
