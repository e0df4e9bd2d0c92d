#!/usr/bin/env python3
"""Simulate seeded pull requests through the gate's statistics: false failures on no-change PRs, detection at the limit.

    python bench/gate_sim.py [--prs 1000] [--limit 0.1] [--seed 7]

What it does:

1. Models an evaluation the way LLM judges behave: each data line (question) has its own chance of being
   judged right, p_i ~ Beta(4, 1) (mean 0.8); every run draws each line's 0/1 score afresh. Lines belong to
   documents; in clustered scenarios, each run also moves every document's chance by a shared amount
   u ~ N(0, sd) (a retrieval index, a prompt that suits a topic, the judge's mood on a template): the
   run-to-run variation is shared within documents, as in issue #25's measurements.
2. Per scenario, 1,000 seeded no-change PRs, each a baseline run and a PR run of one flow with 8 metrics (8
   independent 0/1 evaluations, each with a rule ``{max_drop: LIMIT, significant: true}``), and reports how
   often a metric is labelled ``degraded``, per metric and per flow (any of the 8): the false-failure rate
   (goal: at most 5% per flow).
3. Detection: 1,000 seeded PRs where one of the 8 metrics truly drops by the limit, at the mde-sized data
   (the smallest number of documents of 10 lines whose median reported mde is at most the limit, for the
   method in that row): how often that metric is labelled ``degraded`` (goal: at least 80%).
4. Methods side by side: ``today`` is the gate before issue #25 (a percentile paired bootstrap of the
   per-line differences, 4000 resamples, ``degraded`` when the 95% interval lies below 0, no correction
   for 8 metrics), reproduced here (the resampling drawn through numpy's multinomial for speed: the same
   distribution as resampling lines); ``new`` and ``new+clusters`` call ``llmops_ci.gate.stats.compare``
   (McNemar's exact test for 0/1 scores; with clusters, cluster-robust SE and t on G - 1 df) and Holm over
   the 8 metrics.

Only numpy (already installed with prompt flow) and this repository.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmops_ci.config import GateRule
from llmops_ci.gate.stats import Comparison, adjust_family, compare

METRICS = 8
LINES_PER_DOC = 10
METHODS = ("today", "new", "new+clusters")


@dataclass(frozen=True)
class Scenario:
    name: str
    docs: int
    sd: float  # run-to-run shift of a document's chance, shared by its lines


SCENARIOS = (Scenario("independent lines, 10 docs x 10", 10, 0.0),
             Scenario("clustered, 10 docs x 10, sd 0.15", 10, 0.15),
             Scenario("clustered, 10 docs x 10, sd 0.25", 10, 0.25),
             Scenario("clustered, 20 docs x 10, sd 0.2", 20, 0.2))


def draw_run(rng: np.random.Generator, p: np.ndarray, docs: int, sd: float, shift: float = 0.0) -> np.ndarray:
    per_doc = rng.normal(0.0, sd, size=docs) if sd else np.zeros(docs)
    chance = np.clip(p + np.repeat(per_doc, LINES_PER_DOC), 0.0, 1.0)
    chance = np.maximum(chance - shift, 0.0)  # the true drop is the shift (but where the chance was below it)
    return (rng.random(len(p)) < chance).astype(float)


def today_degraded(diffs: np.ndarray, rng: np.random.Generator, resamples: int = 4000) -> bool:
    """The gate before #25: percentile bootstrap of the mean paired difference; degraded when high < 0."""
    n = len(diffs)
    values, counts = np.unique(diffs, return_counts=True)
    draws = rng.multinomial(n, counts / n, size=resamples)  # how often each value is drawn in a resample
    means = np.sort(draws @ values / n)
    return bool(means[int(0.975 * resamples) - 1] < -1e-12)


def one_pr(rng: np.random.Generator, scenario: Scenario, docs: int, limit: float, changed: bool,
           methods: tuple[str, ...]) -> dict[str, tuple[list[bool], list[float]]]:
    """Per method: which of the 8 metrics were labelled degraded, and their mde."""
    rule = GateRule("judge.m", max_drop=limit, significant=True)
    n = docs * LINES_PER_DOC
    keys = [f"d{i // LINES_PER_DOC}l{i}" for i in range(n)]
    clusters = {k: k.split("l")[0] for k in keys}
    comparisons: dict[str, dict[str, Comparison]] = {"new": {}, "new+clusters": {}}
    today: list[bool] = []
    for m in range(METRICS):
        p = rng.beta(4.0, 1.0, size=n)
        base = draw_run(rng, p, docs, scenario.sd)
        cur = draw_run(rng, p, docs, scenario.sd, limit if changed and m == 0 else 0.0)
        if "today" in methods:
            today.append(today_degraded(cur - base, rng))
        cur_d, base_d = dict(zip(keys, cur.tolist(), strict=True)), dict(zip(keys, base.tolist(), strict=True))
        if "new" in methods:
            comparisons["new"][f"m{m}"] = compare(cur_d, base_d, rule)
        if "new+clusters" in methods:
            comparisons["new+clusters"][f"m{m}"] = compare(cur_d, base_d, rule, clusters=clusters)
    out: dict[str, tuple[list[bool], list[float]]] = {}
    if "today" in methods:
        out["today"] = (today, [])
    for method in ("new", "new+clusters"):
        if method in methods:
            family = adjust_family(comparisons[method], "holm")
            out[method] = ([family[f"m{m}"].verdict == "degraded" for m in range(METRICS)],
                           [family[f"m{m}"].mde or 0.0 for m in range(METRICS)])
    return out


def false_failures(scenario: Scenario, prs: int, limit: float, seed: int) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(seed)
    per_metric = {m: 0 for m in METHODS}
    per_flow = {m: 0 for m in METHODS}
    for _ in range(prs):
        result = one_pr(rng, scenario, scenario.docs, limit, False, METHODS)
        for method, (degraded, _) in result.items():
            per_metric[method] += sum(degraded)
            per_flow[method] += any(degraded)
    return {m: (per_metric[m] / (prs * METRICS), per_flow[m] / prs) for m in METHODS}


def mde_sized_docs(scenario: Scenario, method: str, limit: float, seed: int, pilots: int = 30) -> tuple[int, float]:
    """The fewest documents whose median mde (over pilot no-change PRs, Holm over 8) is at most ``limit``."""
    docs, step = 5, 5
    while True:
        rng = np.random.default_rng(seed + docs)
        mdes = [statistics.median(one_pr(rng, scenario, docs, limit, False, (method,))[method][1])
                for _ in range(pilots)]
        if statistics.median(mdes) <= limit or docs >= 400:
            return docs, statistics.median(mdes)
        step = min(step * 2, 40) if statistics.median(mdes) > 1.5 * limit else 5  # fine steps near the limit
        docs += step


def detection(scenario: Scenario, docs: int, prs: int, limit: float, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    hits = {m: 0 for m in METHODS}
    for _ in range(prs):
        for method, (degraded, _) in one_pr(rng, scenario, docs, limit, True, METHODS).items():
            hits[method] += degraded[0]
    return {m: hits[m] / prs for m in METHODS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prs", type=int, default=1000, help="seeded PRs per scenario (default 1000)")
    parser.add_argument("--limit", type=float, default=0.1, help="the rules' max_drop (default 0.1)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(f"gate_sim: {args.prs} seeded PRs per row; one flow, {METRICS} metrics of 0/1 scores, rule "
          f"{{max_drop: {args.limit}, significant: true}} on each; {LINES_PER_DOC} lines per document\n")
    print("False failures on no-change PRs (share labelled 'degraded'; goal per flow <= 5%)")
    print(f"{'scenario':36} {'method':13} {'per metric':>11} {'per flow':>9}")
    for i, scenario in enumerate(SCENARIOS):
        rates = false_failures(scenario, args.prs, args.limit, args.seed + 1000 * i)
        for method in METHODS:
            metric, flow = rates[method]
            print(f"{scenario.name:36} {method:13} {metric:11.2%} {flow:9.1%}")
    print(f"\nDetection of a true drop of {args.limit} in one of the {METRICS} metrics, at the mde-sized data "
          "(goal >= 80%)")
    print(f"{'scenario':36} {'sized for':13} {'lines':>6} {'mde':>6} " + " ".join(f"{m:>13}" for m in METHODS))
    for i, scenario in enumerate(SCENARIOS[:2]):
        for sized_for in ("new", "new+clusters"):
            docs, median_mde = mde_sized_docs(scenario, sized_for, args.limit, args.seed + 77 * i)
            rates = detection(scenario, docs, args.prs, args.limit, args.seed + 5000 + 1000 * i)
            print(f"{scenario.name:36} {sized_for:13} {docs * LINES_PER_DOC:6d} {median_mde:6.3f} "
                  + " ".join(f"{rates[m]:13.1%}" for m in METHODS))
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
