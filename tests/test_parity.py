"""Parity without an executor: pairing, exact and normalized agreement, failed lines, the record and metrics, the
``against:`` gate rule on paired per-line scores, and the comment's parity section with hostile text."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmops_ci.config import FlowSpec, load_config
from llmops_ci.gate.verdict import gate_flow
from llmops_ci.parity import agrees, disagreements, judged_agreement, normalized, pair_lines, parity_record
from llmops_ci.report.comment import render
from llmops_ci.results.summary import Summary
from tests.helpers.config import Evaluation, Flow, Parity, Rule
from tests.helpers.projects import BASE_CONFIG, Project


def record(line: int, output: Any, status: str = "Completed") -> dict[str, Any]:
    return {"line": line, "status": status, "inputs": {"text": f"t{line}"},
            "outputs": {"category": output} if status == "Completed" else None}


def flow_with_parity(project: Callable[..., Project], parity: Parity) -> FlowSpec:
    proj = project(config=BASE_CONFIG.add_flow("classify2", Flow(
        "flows/classify", data="data/classify.jsonl", column_mapping={"text": "${data.text}"}, parity=parity)))
    return load_config(proj.path("llmops.yaml"), {"OPENAI_BASE_URL": "x", "OPENAI_API_KEY": "y"}).flows["classify2"]


def test_pairs_by_data_line_and_failed_lines_disagree(project: Callable[..., Project]) -> None:
    flow = flow_with_parity(project, Parity("classify", {"category": "category"}, "normalized"))
    new = {0: record(0, "App."), 1: record(1, "movie"), 2: record(2, None, "Failed"), 3: record(3, "None")}
    old = {0: record(0, "app"), 1: record(1, "Movie"), 2: record(2, "None"), 4: record(4, "App")}
    pairs = pair_lines(new, old)
    assert [p.line for p in pairs] == [0, 1, 2, 3, 4]
    assert [agrees(p, {"category": "category"}, "normalized") for p in pairs] == [True, True, False, False, False]
    assert [agrees(p, {"category": "category"}, "exact") for p in pairs] == [False] * 5
    rec = parity_record(flow, pairs, None, 0.1)
    assert rec.metrics == {"agreement": 0.4, "lines": 5, "disagreements": 3}
    assert [line.outputs["agreement"] for line in rec.lines] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert rec.lines[2].outputs["note"].startswith("classify2 failed") and rec.lines[4].outputs["note"].startswith(
        "classify2 failed")
    assert rec.lines[3].outputs["note"].startswith("classify failed")
    assert disagreements(rec)[0] == {"line": 3, "new": "null", "old": "None"}


def test_normalized_is_unicode_case_and_blank_insensitive_only() -> None:
    assert normalized("  Ｍovie\u00a0 night!! ") == normalized("movie night")
    assert normalized("movie") != normalized("movies")
    assert normalized(3) == 3


def test_judged_agreement_reads_pass_fail_then_yes_no() -> None:
    assert judged_agreement({"similarity": 4.0, "similarity_result": "pass", "similarity_threshold": 3}) is True
    assert judged_agreement({"similarity": 2.0, "similarity_result": "fail"}) is False
    assert judged_agreement({"same": 1.0, "same_rationale": "ok"}) is True
    assert judged_agreement({"same": 0.0}) is False
    assert judged_agreement({"score": 3.5}) is None  # no pass/fail: the line is failed, never counted as agreeing


def write_eval(state: Path, flow: str, scores: dict[int, float], metric: float) -> None:
    folder = state / "runs" / flow / "evals" / "acc"
    folder.mkdir(parents=True)
    folder.joinpath("lines.jsonl").write_text("".join(json.dumps(
        {"line": n, "status": "Completed", "outputs": {"score": v}}) + "\n" for n, v in scores.items()))


def test_against_compares_with_the_replaced_flow_paired(project: Callable[..., Project], tmp_path: Path) -> None:
    acc = Evaluation("flows/eval", column_mapping={"groundtruth": "${data.label}",
                                                   "prediction": "${run.outputs.category}"})
    evaluations = {**(BASE_CONFIG.flows["classify"].evaluations or {}),
                   "acc": dataclasses.replace(acc, scores={"accuracy": "score"})}
    proj = project(config=BASE_CONFIG.with_flow(
        "classify", evaluations=evaluations, gate={"acc.accuracy": Rule(max_drop=0.02, against="classify2")}
    ).add_flow("classify2", Flow("flows/classify", data="data/classify.jsonl", column_mapping={"text": "${data.text}"},
                                 evaluations={"acc": acc})))
    flow = load_config(proj.path("llmops.yaml"), {"OPENAI_BASE_URL": "x", "OPENAI_API_KEY": "y"}).flows["classify"]
    rng = random.Random(7)
    old = {n: float(rng.random() < 0.9) for n in range(200)}
    new = {n: (0.0 if n % 5 == 0 else v) for n, v in old.items()}  # a real drop of about 0.18
    state = tmp_path / "state"
    write_eval(state, "classify", new, sum(new.values()) / 200)
    write_eval(state, "classify2", old, sum(old.values()) / 200)
    summary = {"flows": {"classify": {"evaluations": {"acc": {"metrics": {"accuracy": sum(new.values()) / 200}}}},
                         "classify2": {"evaluations": {"acc": {"metrics": {"accuracy": sum(old.values()) / 200}}}}}}
    result = gate_flow(flow, state, Summary.parse(summary), None)  # no baseline at all: the reference is the other flow
    check = result.checks[0]
    assert not result.passed and check.verdict == "degraded" and check.lines == 200
    assert check.baseline == pytest.approx(sum(old.values()) / 200)
    assert "against flow 'classify2'" in (check.note or "")
    # the same flow as reference: unchanged, passes
    write_eval(tmp_path / "same", "classify", old, 0)
    write_eval(tmp_path / "same", "classify2", old, 0)
    summary["flows"]["classify"] = summary["flows"]["classify2"]
    assert gate_flow(flow, tmp_path / "same", Summary.parse(summary), None).passed
    # the reference flow has no results: said, exit 2
    with pytest.raises(Exception, match="compares against flow 'classify2'"):
        gate_flow(flow, state, Summary.parse({"flows": {"classify": summary["flows"]["classify"]}}), None)


def test_comment_parity_section_is_inert(project: Callable[..., Project], tmp_path: Path) -> None:
    flow = flow_with_parity(project, Parity("classify", {"category": "category"}))
    hostile = "@octocat <img src=x> ::error::pwned ```\n## heading"
    pairs = pair_lines({0: record(0, hostile), 1: record(1, "App")}, {0: record(0, "App"), 1: record(1, "App")})
    rec = parity_record(flow, pairs, None, 0.0)
    summary = {"schema": "llmops-ci/summary@1", "flows": {"classify2": {"evaluations": {"parity": {
        "run": rec.name, "status": "completed", "metrics": rec.metrics, "of": "classify", "method": "exact",
        "disagreeing": disagreements(rec)}}}}}
    body = render(Summary.parse(summary))
    section = body.split("### Parity", 1)[1].split("###", 1)[0]
    assert "agreement 0.5 on 2 lines, 1 disagree" in section
    assert "@octocat" not in section and "<img" not in section and "\n## heading" not in section
    assert "octocat" in section and "pwned" in section  # shown, made inert



def test_the_compared_flow_runs_again_only_when_its_run_is_not_current() -> None:
    """batch-run --flow new runs the flow its parity compares with unless that flow's run is current (its
    content and data unchanged): running it again would drop its evaluations for nothing."""
    from types import SimpleNamespace
    from typing import Any, cast

    from llmops_ci.parity import with_compared

    old = SimpleNamespace(name="old", parity=None)
    new = SimpleNamespace(name="new", parity=SimpleNamespace(of="old"))
    config = cast(Any, SimpleNamespace(flows={"old": old, "new": new}))
    assert [f.name for f in with_compared(config, [cast(Any, new)])] == ["new", "old"]
    assert [f.name for f in with_compared(config, [cast(Any, new)], current=lambda f: True)] == ["new"]
    assert [f.name for f in with_compared(config, [cast(Any, new), cast(Any, old)], current=lambda f: True)] == \
        ["new", "old"]  # asked for by name: it runs
