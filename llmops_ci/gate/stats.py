"""The statistics behind a gate verdict: paired comparison of per-line scores, clusters, McNemar, Holm, power.

Pure functions over numbers; no files, no config. ``compare`` takes per-line scores keyed by any line key
(a data line's key, a line index) and needs nothing about where the reference scores came from: a baseline
run, or a sibling flow in the same run (``against:`` rules). ``adjust_family`` then applies Holm's step-down
correction across one flow's comparisons. docs/gate.md explains every choice, with references.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

SEED = 20240607
RESAMPLES = 4000
MIN_LINES = 10
MIN_CLUSTERS = 5  # below this even t on G - 1 df is unreliable (Cameron & Miller 2015, section VI)
ALPHA = 0.05
POWER = 0.80
_EPS = 1e-12
_Z = NormalDist()


def z(q: float) -> float:
    return _Z.inv_cdf(q)


Z_TWO_SIDED = z(1 - ALPHA / 2)  # 1.96: the 95% interval, and the change test's critical value
Z_ONE_SIDED = z(1 - ALPHA)  # 1.645: the non-inferiority bound
Z_POWER = z(POWER)  # 0.8416


@dataclass(frozen=True)
class Comparison:
    """Current minus reference over the lines both scored. ``interval`` is two-sided 95%; ``bound`` the one-sided
    95% bound on the worse side (the non-inferiority test's); ``p_value`` the two-sided p of "no change",
    family-adjusted once ``adjust_family`` ran (``p_raw`` keeps the unadjusted one)."""

    lines: int
    only_current: int
    only_baseline: int
    delta: float | None
    interval: tuple[float, float] | None
    verdict: str
    method: str | None = None
    p_value: float | None = None
    p_raw: float | None = None
    mde: float | None = None  # two-sided test at ALPHA with POWER, for this n and observed variance
    mde_one_sided: float | None = None  # the same for the non-inferiority test
    bound: float | None = None
    clusters: int | None = None
    se: float | None = None  # standard error of the mean change (cluster-robust with clusters)
    discordance: float | None = None  # 0/1 scores: the share of discordant lines (McNemar's b + c over n)
    binary: bool = False  # 0/1 scores on both sides
    tolerance: float = 0.0
    higher_better: bool = True
    note: str | None = None
    repeats: int | None = None  # set by the caller: runs per line, and the mean within-line sd
    spread: float | None = None


@dataclass(frozen=True)
class _Stats:
    interval: tuple[float, float]
    bound: float
    p_value: float
    mde: float
    mde_one_sided: float
    se: float
    discordance: float | None = None  # 0/1 scores: the share of lines that changed either way


def verdict_of(c: Comparison) -> str:
    """improved / degraded (the change is shown at ALPHA after family adjustment), unchanged (the interval lies
    within ± the rule's limit), underpowered (the limit is below what this data can detect), else inconclusive."""
    if c.interval is None or c.p_value is None or c.delta is None:
        return "too few lines"
    low, high = c.interval
    if c.p_value < ALPHA:
        if c.delta > 0:
            return "improved" if c.higher_better else "degraded"
        if c.delta < 0:
            return "degraded" if c.higher_better else "improved"
    if -c.tolerance - _EPS <= low and high <= c.tolerance + _EPS:
        return "unchanged"
    if c.mde is not None and c.tolerance < c.mde - _EPS:
        return "underpowered"
    return "inconclusive"


def non_inferior(c: Comparison) -> bool:
    """Shown non-inferior: the one-sided 95% bound of the change on the worse side stays within the limit."""
    if c.bound is None:
        return False
    return c.bound >= -c.tolerance - _EPS if c.higher_better else c.bound <= c.tolerance + _EPS


def non_inferiority_verdict(c: Comparison) -> str:
    """A non_inferiority rule's verdict: ``unchanged`` when shown non-inferior (and not improved); otherwise
    degraded when the drop is shown, underpowered when the limit is below the one-sided test's mde, or
    inconclusive."""
    general = verdict_of(c)
    if general in ("too few lines", "improved", "degraded"):
        return general
    if non_inferior(c):
        return "unchanged"
    if c.mde_one_sided is not None and c.tolerance < c.mde_one_sided - _EPS:
        return "underpowered"
    return "inconclusive"


def compare(current: Mapping[K, float], baseline: Mapping[K, float], rule: object, *,
            clusters: Mapping[K, Hashable] | None = None, seed: int = SEED, resamples: int = RESAMPLES,
            min_lines: int = MIN_LINES) -> Comparison:
    """Paired comparison of per-line scores (current - reference) for one gate rule.

    ``current`` and ``baseline`` map a line key to the line's score; lines only one side has are counted, not
    compared. ``clusters`` maps a line key to its cluster (lines sharing a document, a conversation): then the
    cluster is the unit resampled. Binary 0/1 scores without clusters use McNemar's exact test with Newcombe's
    interval; others a paired bootstrap. With clusters: cluster-robust standard errors and t on G - 1 df.
    ``rule`` is a ``GateRule`` (anything with max_drop/max_rise/min/max).
    The reference may be a baseline run or a sibling flow: this function does not care.
    """
    tolerance = _tolerance(rule)
    better = higher_is_better(rule)
    common = sorted(set(current) & set(baseline), key=repr)
    only_current, only_baseline = len(set(current) - set(baseline)), len(set(baseline) - set(current))
    diffs = [current[k] - baseline[k] for k in common]
    n = len(diffs)
    delta = sum(diffs) / n if n else None
    base = Comparison(n, only_current, only_baseline, delta, None, "too few lines", tolerance=tolerance,
                      higher_better=better)
    if n < min_lines:
        return base
    if clusters is not None:
        groups: dict[Hashable, list[float]] = {}
        for key, d in zip(common, diffs, strict=True):
            groups.setdefault(clusters.get(key, ("line", key)), []).append(d)
        if len(groups) < MIN_CLUSTERS:
            return replace(base, clusters=len(groups), method="cluster-robust-t",
                           note=f"{len(groups)} clusters: at least {MIN_CLUSTERS} are needed for an interval")
        binary = all(current[k] in (0.0, 1.0) and baseline[k] in (0.0, 1.0) for k in common)
        stats = _cluster_t(list(groups.values()), better, binary)
        result = replace(base, **asdict(stats), clusters=len(groups), method="cluster-robust-t", binary=binary)
    elif all(current[k] in (0.0, 1.0) and baseline[k] in (0.0, 1.0) for k in common):
        stats = _mcnemar([current[k] for k in common], [baseline[k] for k in common], better)
        result = replace(base, **asdict(stats), method="mcnemar")
    else:
        result = replace(base, **asdict(_bootstrap(diffs, seed, resamples, better)), method="paired-bootstrap")
    result = replace(result, p_raw=result.p_value)
    return replace(result, verdict=verdict_of(result))


def higher_is_better(rule: object) -> bool:
    max_rise, max_, min_, max_drop = (getattr(rule, k, None) for k in ("max_rise", "max", "min", "max_drop"))
    return not (max_rise is not None or (max_ is not None and min_ is None and max_drop is None))


def _tolerance(rule: object) -> float:
    max_drop, max_rise = getattr(rule, "max_drop", None), getattr(rule, "max_rise", None)
    return float(max_drop if max_drop is not None else max_rise or 0.0)


def mde(se: float, z_alpha: float = Z_TWO_SIDED) -> float:
    """The true change a test at ALPHA finds with POWER probability when its standard error is ``se``."""
    return (z_alpha + Z_POWER) * se




def _percentile_p(count_le: int, count_ge: int, total: int) -> float:
    """Two-sided bootstrap p of "no change": twice the smaller share of resampled means on either side of 0."""
    return min(1.0, 2 * (min(count_le, count_ge) + 1) / (total + 1))


def _summarise(means: object, se: float, better: bool) -> _Stats:
    import numpy as np

    m = np.sort(np.asarray(means))
    b = len(m)
    low, high = float(m[int(0.025 * b)]), float(m[int(0.975 * b) - 1])
    worse_bound = float(m[int(0.05 * b)]) if better else float(m[int(0.95 * b) - 1])
    p = _percentile_p(int(np.count_nonzero(m <= _EPS)), int(np.count_nonzero(m >= -_EPS)), b)
    return _Stats((round(low, 6), round(high, 6)), round(worse_bound, 6), p, round(mde(se), 6),
                  round(mde(se, Z_ONE_SIDED), 6), se)


def _bootstrap(diffs: list[float], seed: int, resamples: int, better: bool) -> _Stats:
    import numpy as np

    d = np.asarray(diffs, dtype=float)
    n = len(d)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return _summarise(means, se, better)


def cluster_se(groups: list[list[float]]) -> float:
    """Cluster-robust (CR1) standard error of the mean over all lines (Cameron & Miller 2015, eq. 11 for a mean)."""
    n = sum(len(g) for g in groups)
    g_count = len(groups)
    if n == 0 or g_count < 2:
        return 0.0
    mean = sum(sum(g) for g in groups) / n
    total = sum((sum(g) - len(g) * mean) ** 2 for g in groups)
    return math.sqrt(g_count / (g_count - 1) * total) / n


def _cluster_t(groups: list[list[float]], better: bool, binary: bool = False) -> _Stats:
    """Cluster-robust inference: the CR1 standard error with Student's t on G - 1 degrees of freedom, which
    keeps its level with few clusters where a cluster bootstrap is too narrow (Cameron, Gelbach & Miller 2008;
    Cameron & Miller 2015, section VI)."""
    n = sum(len(g) for g in groups)
    mean = sum(sum(g) for g in groups) / n
    se = cluster_se(groups)
    df = len(groups) - 1
    crit, one = t_ppf(1 - ALPHA / 2, df), t_ppf(1 - ALPHA, df)
    p = 2 * (1 - t_cdf(abs(mean) / se, df)) if se > 0 else (1.0 if abs(mean) <= _EPS else 0.0)
    lines = n if binary else None
    return _Stats((round(mean - crit * se, 6), round(mean + crit * se, 6)),
                  round(mean - one * se if better else mean + one * se, 6), min(1.0, max(0.0, p)),
                  round(t_mde(se, df, lines=lines), 6), round(t_mde(se, df, ALPHA, one_sided=True, lines=lines), 6),
                  se)


def t_mde(se: float, df: int, alpha: float = ALPHA, *, one_sided: bool = False, lines: int | None = None) -> float:
    """(t_alpha + t_power) * SE on ``df`` degrees of freedom. ``lines``: 0/1 scores on that many lines, where a
    drop d turns lines that agreed into losses and adds (d - d²) / n to the variance of the mean (as in
    ``mcnemar_mde``): solved for d by fixed-point iteration."""
    factor = t_ppf(1 - (alpha if one_sided else alpha / 2), df) + t_ppf(POWER, df)
    delta = factor * se
    if lines:
        for _ in range(100):
            following = factor * math.sqrt(se * se + max(0.0, delta - delta * delta) / lines)
            if abs(following - delta) < 1e-9:
                break
            delta = following
    return min(1.0, delta) if lines else delta


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: int) -> float:
    """Student's t distribution function."""
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


@functools.lru_cache(maxsize=1024)
def t_ppf(q: float, df: int) -> float:
    """Student's t quantile, by bisection on ``t_cdf`` (a handful of (q, df) pairs recur: cached)."""
    low, high = -1e3, 1e3
    for _ in range(200):
        mid = (low + high) / 2
        if t_cdf(mid, df) < q:
            low = mid
        else:
            high = mid
    return (low + high) / 2


# --- binary scores -----------------------------------------------------------------------------------

def binom_cdf(k: int, n: int, p: float = 0.5) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed exactly in floating point."""
    if k < 0:
        return 0.0
    return min(1.0, sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(min(k, n) + 1)))


def mcnemar_exact_p(gains: int, losses: int) -> float:
    """Two-sided exact McNemar p: the discordant pairs as a Binomial(b + c, 1/2) (McNemar 1947; Fagerland,
    Lydersen & Laake 2013 for the exact form)."""
    n = gains + losses
    if n == 0:
        return 1.0
    return min(1.0, 2 * binom_cdf(min(gains, losses), n))


def wilson(successes: int, n: int, z_value: float = Z_TWO_SIDED) -> tuple[float, float]:
    """Wilson's score interval for a proportion (Wilson 1927; Brown, Cai & DasGupta 2001)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z_value ** 2 / (2 * n)) / (1 + z_value ** 2 / n)
    half = z_value * math.sqrt(p * (1 - p) / n + z_value ** 2 / (4 * n * n)) / (1 + z_value ** 2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe_paired(both: int, only_current: int, only_reference: int, neither: int,
                    z_value: float = Z_TWO_SIDED) -> tuple[float, float]:
    """Interval for p_current - p_reference on paired binary data: Newcombe (1998) method 10, built from the
    two Wilson intervals and the phi correlation of the 2x2 table."""
    n = both + only_current + only_reference + neither
    p1, p2 = (both + only_current) / n, (both + only_reference) / n
    l1, u1 = wilson(both + only_current, n, z_value)
    l2, u2 = wilson(both + only_reference, n, z_value)
    denominator = (both + only_current) * (only_reference + neither) * (both + only_reference) * (only_current
                                                                                                  + neither)
    phi = (both * neither - only_current * only_reference) / math.sqrt(denominator) if denominator else 0.0
    theta = p1 - p2
    low = theta - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = theta + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return (max(-1.0, low), min(1.0, high))


def _mcnemar(current: list[float], reference: list[float], better: bool) -> _Stats:
    table = {(a, b): 0 for a in (1.0, 0.0) for b in (1.0, 0.0)}
    for a, b in zip(current, reference, strict=True):
        table[(a, b)] += 1
    both, gains, losses, neither = table[(1.0, 1.0)], table[(1.0, 0.0)], table[(0.0, 1.0)], table[(0.0, 0.0)]
    n = len(current)
    low, high = newcombe_paired(both, gains, losses, neither)
    one_low, one_high = newcombe_paired(both, gains, losses, neither, Z_ONE_SIDED)
    diff = [a - b for a, b in zip(current, reference, strict=True)]
    mean = sum(diff) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diff) / (n - 1) / n) if n > 1 else 0.0
    psi = (gains + losses) / n
    return _Stats((round(low, 6), round(high, 6)), round(one_low if better else one_high, 6),
                  mcnemar_exact_p(gains, losses), round(mcnemar_mde(psi, n), 6),
                  round(mcnemar_mde(psi, n, Z_ONE_SIDED), 6), se, psi)


def mcnemar_mde(discordance: float, n: int, z_alpha: float = Z_TWO_SIDED) -> float:
    """The drop McNemar's test detects with POWER probability on n paired 0/1 lines, by Connor's (1987) sample
    size formula n = (z_a sqrt(psi) + z_b sqrt(psi - d²))² / d² with the discordance under the change
    psi = observed + d: a regression turns lines that agreed into losses, so the variance the test meets is
    larger than the one observed without it. Solved for d by fixed-point iteration (it increases to the root)."""
    if n < 2:
        return 1.0
    # the exact test's floor: k lines all flipping one way give p = 2 * 0.5^k, so fewer than k flips can never be
    # shown whatever the variance (with no discordant line the formula alone would say any change is detectable)
    tail = 0.5 * math.erfc(z_alpha / math.sqrt(2))
    floor = math.floor(math.log2(1 / tail)) + 1
    delta = max(mde(math.sqrt(discordance / n), z_alpha), 1 / n)  # above the formula's trivial root d = 0
    for _ in range(100):
        psi = min(1.0, discordance + delta)
        following = (z_alpha * math.sqrt(psi) + Z_POWER * math.sqrt(max(0.0, psi - delta * delta))) / math.sqrt(n)
        if abs(following - delta) < 1e-9:
            break
        delta = following
    return min(1.0, max(delta, floor / n))


@dataclass(frozen=True)
class Level:
    """How sure a threshold's value is: the 95% interval of the mean per-line score."""

    lines: int
    mean: float
    interval: tuple[float, float]
    method: str
    clusters: int | None = None


def level(scores: Mapping[K, float], clusters: Mapping[K, Hashable] | None = None,
          min_lines: int = MIN_LINES) -> Level | None:
    """Wilson's interval for 0/1 scores, a cluster-robust t interval with clusters; None otherwise (a threshold
    then judges the value alone) or with fewer than ``min_lines`` lines or MIN_CLUSTERS clusters."""
    n = len(scores)
    if n < min_lines:
        return None
    mean = sum(scores.values()) / n
    if clusters is not None:
        groups: dict[Hashable, list[float]] = {}
        for key, value in scores.items():
            groups.setdefault(clusters.get(key, ("line", key)), []).append(value)
        if len(groups) < MIN_CLUSTERS:
            return None
        half = t_ppf(1 - ALPHA / 2, len(groups) - 1) * cluster_se(list(groups.values()))
        return Level(n, mean, (round(mean - half, 6), round(mean + half, 6)), "cluster-robust-t", len(groups))
    if all(v in (0.0, 1.0) for v in scores.values()):
        low, high = wilson(round(mean * n), n)
        return Level(n, mean, (round(low, 6), round(high, 6)), "wilson")
    return None


# --- many metrics ----------------------------------------------------------------------------------------

def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979): reject where adjusted p < alpha keeps the family-wise
    error rate at alpha for any dependence between the tests."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def adjust_family(comparisons: Mapping[str, Comparison], family: str = "holm") -> dict[str, Comparison]:
    """The flow's comparisons (by metric) with family-adjusted p-values and the verdicts they give. The mde is
    then the one of the first Holm step (alpha / m, Bonferroni's): the change each metric detects with 80%
    power when it is the only one that changed."""
    tested = {k: c for k, c in comparisons.items() if c.p_raw is not None}
    if family == "none" or len(tested) < 2:
        return dict(comparisons)
    names = list(tested)
    adjusted = holm([tested[k].p_raw or 0.0 for k in names])
    z_family = z(1 - ALPHA / (2 * len(names)))
    out = dict(comparisons)
    for name, p in zip(names, adjusted, strict=True):
        c = tested[name]
        family_mde = c.mde
        if c.discordance is not None:
            family_mde = round(mcnemar_mde(c.discordance, c.lines, z_family), 6)
        elif c.se is not None:
            family_mde = round(t_mde(c.se, c.clusters - 1, ALPHA / len(names), lines=c.lines if c.binary else None)
                               if c.clusters else mde(c.se, z_family), 6)
        changed = replace(c, p_value=p, mde=family_mde)
        out[name] = replace(changed, verdict=verdict_of(changed))
    return out


def lines_needed(limit: float, sd: float, z_alpha: float = Z_TWO_SIDED) -> int:
    """Paired lines needed so that the mde falls to ``limit`` for a per-line difference sd of ``sd``."""
    if limit <= 0:
        return 0
    return math.ceil(((z_alpha + Z_POWER) * sd / limit) ** 2)


def never_detectable(rows: int, limit: float, tested: int = 1, *, min_lines: int = MIN_LINES) -> str | None:
    """Why ``rows`` data lines can never show a drop of ``limit`` (None when they might): fewer lines than the gate
    compares, or, for 0/1 scores, fewer lines than McNemar's exact test needs even when every one of the ``limit``
    share of lines flips the same way and nothing else moves (2 * 0.5^k < alpha / tested)."""
    if rows < min_lines:
        return f"{rows} data lines: the gate compares at least {min_lines} paired lines"
    needed = math.ceil(math.log2(2 * tested / ALPHA))
    if 0 < limit < 1 and math.floor(rows * limit + 1e-9) < needed:
        return (f"a drop of {limit:g} on {rows} lines is {math.floor(rows * limit + 1e-9)} lines; with 0/1 scores "
                f"even {needed} lines all flipping the same way are the fewest that can show it (McNemar's exact "
                f"test at alpha {ALPHA:g}" + (f" over {tested} metrics" if tested > 1 else "") + ")")
    return None
