"""The verdict statistics on fixed inputs, to the digits the report shows (6 decimals), in both directions.

test_gate_stats.py derives the formulas by hand; this file keeps every number a row can carry (interval, bound,
p, mde, one-sided mde, standard error, clusters) from drifting, for each method: cluster-robust t (0/1 and
graded scores), McNemar with Newcombe's interval, the paired bootstrap, and the threshold levels.
"""

from __future__ import annotations

import pytest

from llmops_ci.config import GateRule
from llmops_ci.gate.stats import (
    MIN_CLUSTERS,
    Z_ONE_SIDED,
    _betainc,
    binom_cdf,
    cluster_se,
    compare,
    holm,
    level,
    lines_needed,
    mcnemar_exact_p,
    mcnemar_mde,
    never_detectable,
    newcombe_paired,
    t_cdf,
    t_mde,
    t_ppf,
    wilson,
)

SCORES = {i: v for i, v in enumerate([0.2, 0.9, 0.4, 0.7, 0.5, 1.0, 0.3, 0.8, 0.6, 0.1, 0.55, 0.65])}
CLUSTERS = {0: "a", 1: "a", 2: "b", 3: "b", 4: "c", 5: "c", 6: "d", 7: "d", 8: "e", 9: "e"}  # 10, 11: alone
CURRENT = {i: v + (0.05 if i % 2 else -0.15) for i, v in SCORES.items()}
DROP, RISE = GateRule("m", max_drop=0.1), GateRule("m", max_rise=0.1)
BIN_CURRENT = {i: float(i % 4 != 0) for i in range(16)}
BIN_BASE = {i: float(i % 3 != 0) for i in range(16)}


def test_threshold_levels() -> None:
    clustered = level(SCORES, CLUSTERS)
    assert clustered is not None
    assert (clustered.lines, clustered.interval, clustered.method, clustered.clusters) == (
        12, (0.431838, 0.684829), "cluster-robust-t", 7)  # lines without a cluster are clusters of their own
    assert clustered.mean == pytest.approx(0.558333, abs=1e-6)
    five = level({i: SCORES[i] for i in range(10)}, CLUSTERS)
    assert five is not None and five.clusters == MIN_CLUSTERS == 5 and five.interval == (0.374402, 0.725598)
    assert level({i: SCORES[i] for i in range(8)}, CLUSTERS, min_lines=8) is None  # 4 clusters
    binary = level({i: float(i % 3 != 0) for i in range(12)})
    assert binary is not None
    assert (binary.lines, binary.interval, binary.method, binary.clusters) == (12, (0.390622, 0.86188), "wilson", None)
    assert binary.mean == pytest.approx(2 / 3)
    assert level({i: 1.0 for i in range(9)}) is None and level({i: 1.0 for i in range(10)}) is not None
    assert level(SCORES) is None  # graded scores without clusters: the threshold judges the value alone


def test_cluster_robust_t_on_graded_scores_both_directions() -> None:
    down = compare(CURRENT, SCORES, DROP, clusters=CLUSTERS)
    assert (down.method, down.clusters, down.lines, down.binary) == ("cluster-robust-t", 7, 12, False)
    assert down.interval == (-0.081148, -0.018852) and down.mde == 0.042677 and down.mde_one_sided == 0.036265
    assert down.bound == -0.074735 and down.verdict == "degraded"
    assert down.p_value == pytest.approx(0.0077312, abs=1e-7) and down.se == pytest.approx(0.0127294, abs=1e-7)
    up = compare(CURRENT, SCORES, RISE, clusters=CLUSTERS)  # lower is better: the worse side is the upper bound
    assert up.bound == -0.025265 and up.verdict == "improved" and up.interval == down.interval


def test_cluster_robust_t_on_0_1_scores() -> None:
    pairs = {i: str(i // 2) for i in range(16)}
    down = compare(BIN_CURRENT, BIN_BASE, DROP, clusters=pairs)
    assert (down.method, down.clusters, down.binary, down.se) == ("cluster-robust-t", 8, True, 0.125)
    assert down.interval == (-0.170578, 0.420578) and down.bound == -0.111822
    assert down.mde == 0.573302 and down.mde_one_sided == 0.493292  # with the variance a drop adds to 0/1 lines
    assert down.p_value == pytest.approx(0.3506167, abs=1e-7) and down.verdict == "underpowered"
    assert compare(BIN_CURRENT, BIN_BASE, RISE, clusters=pairs).bound == 0.361822


def test_mcnemar_both_directions() -> None:
    down = compare(BIN_CURRENT, BIN_BASE, DROP)
    assert (down.method, down.discordance, down.p_value, down.lines) == ("mcnemar", 0.375, 0.6875, 16)
    assert down.interval == (-0.161874, 0.386422) and down.bound == -0.119134
    assert down.mde == 0.649903 and down.mde_one_sided == 0.564333
    assert down.se == pytest.approx(0.1547848, abs=1e-7) and down.delta == 0.125
    assert compare(BIN_CURRENT, BIN_BASE, RISE).bound == 0.350312


def test_bootstrap_both_directions() -> None:
    down = compare(CURRENT, SCORES, DROP, resamples=400)
    assert down.method == "paired-bootstrap" and down.interval == (-0.116667, 0.0) and down.bound == -0.1
    assert down.mde == 0.084471 and down.mde_one_sided == 0.07497
    assert down.se == pytest.approx(0.0301511, abs=1e-7) and down.p_value == pytest.approx(0.1496259, abs=1e-7)
    assert compare(CURRENT, SCORES, RISE, resamples=400).bound == 0.0


def test_student_t_and_the_incomplete_beta() -> None:
    assert t_cdf(0.5, 3) == pytest.approx(0.6742760, abs=1e-7) and t_cdf(-0.5, 3) == pytest.approx(0.3257240, abs=1e-7)
    assert t_cdf(0.0, 7) == 0.5 and t_ppf(0.975, 1) == pytest.approx(12.7062047, abs=1e-6)
    # I_x(2, 3) = sum_{j=2..4} C(4, j) x^j (1-x)^(4-j): 0.1808 at 0.2 (series), 0.9728 at 0.8 (the other side)
    assert _betainc(2, 3, 0.2) == pytest.approx(0.1808, abs=1e-12) and _betainc(2, 3, 0.8) == pytest.approx(0.9728)
    assert (_betainc(2, 3, 0.0), _betainc(2, 3, -0.5), _betainc(2, 3, 1.0), _betainc(2, 3, 1.5)) == (0, 0, 1, 1)


def test_binomial_mcnemar_wilson_newcombe_edges() -> None:
    assert (binom_cdf(-1, 5), binom_cdf(0, 3), binom_cdf(10, 3), binom_cdf(2, 4)) == (0.0, 0.125, 1.0, 0.6875)
    assert (mcnemar_exact_p(0, 0), mcnemar_exact_p(1, 0), mcnemar_exact_p(0, 3), mcnemar_exact_p(6, 6)) == (
        1.0, 1.0, 0.25, 1.0)
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(1, 1) == pytest.approx((0.2065493, 1.0), abs=1e-7)
    assert wilson(3, 10) == pytest.approx((0.1077913, 0.6032219), abs=1e-7)
    assert newcombe_paired(30, 8, 2, 10) == pytest.approx((-0.0001123, 0.2371246), abs=1e-7)
    assert newcombe_paired(0, 0, 5, 5) == pytest.approx((-0.7634069, -0.1173675), abs=1e-7)
    assert newcombe_paired(20, 0, 0, 0) == pytest.approx((-0.1611252, 0.1611252), abs=1e-7)  # phi undefined: 0
    assert newcombe_paired(0, 10, 0, 0) == pytest.approx((0.6075094, 1.0), abs=1e-7)


def test_power_and_detectability() -> None:
    assert t_mde(0.5, 4) == pytest.approx(1.8587048, abs=1e-7)
    assert t_mde(0.5, 4, one_sided=True) == pytest.approx(1.5364057, abs=1e-7)
    assert t_mde(0.5, 4, lines=20) == 1.0  # a share cannot change by more than 1
    assert t_mde(0.05, 4, lines=20) == pytest.approx(0.4536551, abs=1e-7)
    assert t_mde(0.05, 4, lines=20, one_sided=True) == pytest.approx(0.3646734, abs=1e-7)
    assert mcnemar_mde(0.1, 1) == 1.0 and mcnemar_mde(0.9, 3) == 1.0
    assert mcnemar_mde(0.1, 100) == pytest.approx(0.1339035, abs=1e-7)
    assert mcnemar_mde(0.1, 100, Z_ONE_SIDED) == pytest.approx(0.1137652, abs=1e-7)
    assert (lines_needed(0, 1), lines_needed(-1, 1), lines_needed(0.1, 0.5), lines_needed(0.1, 0.5, Z_ONE_SIDED)) == (
        0, 0, 197, 155)
    assert never_detectable(9, 0.5) == "9 data lines: the gate compares at least 10 paired lines"
    assert never_detectable(10, 0.5) == (
        "a drop of 0.5 on 10 lines is 5 lines; with 0/1 scores even 6 lines all flipping the same way are the "
        "fewest that can show it (McNemar's exact test at alpha 0.05)")
    assert never_detectable(50, 0.1, 2) == (
        "a drop of 0.1 on 50 lines is 5 lines; with 0/1 scores even 7 lines all flipping the same way are the "
        "fewest that can show it (McNemar's exact test at alpha 0.05 over 2 metrics)")
    assert never_detectable(60, 0.1) is None and never_detectable(50, 1.0) is None
    assert never_detectable(50, 0.0) is None


def test_holm_and_cluster_se_edges() -> None:
    assert holm([0.6, 0.7]) == [1.0, 1.0] and holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert cluster_se([[1.0], [2.0]]) == 0.5 and cluster_se([[1.0, 2.0]]) == 0.0 and cluster_se([]) == 0.0


def test_clusters_with_no_spread_decide_by_the_mean_alone() -> None:
    from llmops_ci.gate.stats import non_inferior

    base = {i: 0.5 for i in range(12)}
    same = compare(dict(base), base, DROP, clusters=CLUSTERS)
    assert same.se == 0.0 and same.p_value == 1.0 and same.verdict == "unchanged"
    lower = compare({i: 0.0 for i in range(12)}, base, DROP, clusters=CLUSTERS)
    assert lower.se == 0.0 and lower.p_value == 0.0 and lower.verdict == "degraded"
    assert never_detectable(10, 1.0, 100) is None and never_detectable(70, 0.1, 3) is None
    from llmops_ci.gate.stats import Comparison

    def c(bound: float, higher: bool) -> Comparison:
        return Comparison(20, 0, 0, 0.0, (-0.2, 0.2), "", p_value=0.5, bound=bound, tolerance=0.1,
                          higher_better=higher)

    assert non_inferior(c(-0.1 - 1e-12, True)) and non_inferior(c(0.1 + 1e-12, False))  # the limit itself passes


def test_compare_edges_few_clusters_mixed_keys_and_nothing_in_common() -> None:
    four = {i: str(i % 4) for i in range(12)}
    few = compare(CURRENT, SCORES, DROP, clusters=four)
    assert (few.clusters, few.method, few.interval, few.verdict, few.lines) == (
        4, "cluster-robust-t", None, "too few lines", 12)
    assert few.note == "4 clusters: at least 5 are needed for an interval"
    five = compare(CURRENT, SCORES, DROP, clusters={i: str(i % 5) for i in range(12)})
    assert five.clusters == 5 and five.interval is not None and five.note is None
    mixed_cur = {**{i: float(i) for i in range(6)}, **{f"k{i}": float(i) / 2 for i in range(6)}}
    mixed_base = {k: v + (0.1 if isinstance(k, int) else 0.3) for k, v in mixed_cur.items()}
    mixed = compare(mixed_cur, mixed_base, DROP)  # line keys of several types: compared, not a crash
    assert mixed.lines == 12 and mixed.delta == pytest.approx(-0.2)
    empty = compare({}, {"a": 1.0}, DROP)
    assert (empty.lines, empty.delta, empty.verdict, empty.only_baseline) == (0, None, "too few lines", 1)
    half = compare({i: float(i % 2) for i in range(12)}, SCORES, DROP, clusters=CLUSTERS)
    assert half.binary is False  # 0/1 on one side only: not a 0/1 comparison
