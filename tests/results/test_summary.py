"""summary.json's typed read side: parsed once, every shape read without a traceback, nothing written changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmops_ci.results.records import RunJob, RunOptions
from llmops_ci.results.state import SCHEMA, load_summary, update_flow, write_json_atomic
from llmops_ci.results.summary import FlowResult, Summary

WRITTEN: dict[str, Any] = {
    "schema": SCHEMA,
    "lint": {"findings": [{"severity": "error", "path": "a/flow.dag.yaml", "line": 3, "column": 1, "rule": "r",
                           "message": "m"}]},
    "steps": {"eval-run": {"exit_code": 3, "error": "down"}},
    "flows": {"qa": {
        "config": "llmops.yaml",
        "run": {"name": "qa_1", "status": "completed", "lines_total": 4, "lines_failed": 1, "duration_s": 1.5,
                "latency_p95": 0.2, "tokens": {"prompt": 3, "completion": 4, "total": 7}, "flow_hash": "f0",
                "errors": [{"line": 2, "node": "llm", "message": "boom"}],
                "llm_cache": {"hits": 3, "misses": 1, "tokens_saved": 9, "recorded_in_change": 2}},
        "evaluations": {"judge": {"run": "judge_1", "status": "incomplete", "metrics": {"accuracy": 0.75}},
                        "parity": {"of": "old", "method": "exact", "metrics": {"agreement": 1.0},
                                   "disagreeing": [{"line": 1, "new": "a", "old": "b"}]}},
        "gate": {"passed": False, "checks": [{"metric": "judge.accuracy", "rule": "min", "limit": 0.8,
                                              "passed": False, "value": 0.75, "interval": [0.5, 0.9]}],
                 "provenance": {"commit": "abc", "evaluation_hashes": {"judge": "e0"}}},
        "deploy": {"status": "rolled_back", "smoke": [{"passed": True}, {"passed": False}], "traffic": {"blue": 100}},
    }},
}


def test_what_the_steps_wrote_reads_as_typed_values(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "summary.json", WRITTEN)
    summary = load_summary(tmp_path)
    qa = summary.flows["qa"]
    assert qa.run is not None and qa.run.status == "completed" and qa.run.lines_total == 4
    assert qa.run.tokens["total"] == 7 and qa.run.errors[0].message == "boom"
    assert qa.run.llm_cache is not None and qa.run.llm_cache.recorded_in_change == 2
    assert qa.evaluations["judge"].status == "incomplete" and qa.evaluations["judge"].metrics == {"accuracy": 0.75}
    parity = qa.evaluations["parity"].parity
    assert parity is not None and parity.of == "old" and parity.disagreeing[0].new == "a"
    assert qa.evaluations["judge"].parity is None  # only an entry with "of" compares flows
    assert qa.gate is not None and qa.gate.passed is False and qa.gate.checks[0].interval == (0.5, 0.9)
    assert qa.gate.provenance.commit == "abc" and qa.gate.provenance.evaluation_hashes == {"judge": "e0"}
    assert qa.deploy is not None and qa.deploy.status == "rolled_back" and qa.deploy.smoke == (True, False)
    assert qa.ran and summary.linted and summary.findings[0].rule == "r" and summary.steps["eval-run"].exit_code == 3


def test_reading_never_changes_what_is_written(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "summary.json", WRITTEN)
    before = (tmp_path / "summary.json").read_bytes()
    load_summary(tmp_path)
    update_flow(tmp_path, "qa", "config", "llmops.yaml")  # a write after a read: the same bytes as before
    assert (tmp_path / "summary.json").read_bytes() == before


@pytest.mark.parametrize("data", [
    {}, {"flows": []}, {"flows": {"qa": 5}}, {"flows": {"qa": {"run": "x", "evaluations": [1], "gate": 3}}},
    {"flows": {"qa": {"run": {"status": "weird", "lines_total": "4", "errors": [1, {"line": 1}]},
                      "evaluations": {"e": None}, "gate": {"checks": [1, {"passed": 1}], "changed_lines": {"m": 2}},
                      "deploy": {"status": 7, "smoke": [1]}, "unchanged": {"since": "main"}}}},
    {"lint": {"findings": [1, {"severity": ["x"]}]}, "steps": {"lint": 3}, "interrupted": {"step": "pr"}},
])
def test_any_shape_parses_and_a_wrong_type_reads_as_absent(data: dict[str, Any]) -> None:
    summary = Summary.parse(data)
    for flow in summary.flows.values():
        assert isinstance(flow, FlowResult)
        assert flow.run is None or flow.run.status is None
        assert flow.deploy is None or flow.deploy.status is None
    assert json.dumps(data)  # the input is left as it was


def test_a_run_job_names_its_flow_and_evaluation() -> None:
    batch = RunJob("qa", "qa_1", Path("flows/qa"), None, Path("d.jsonl"), {}, None, {}, {}, (),  # type: ignore[arg-type]
                   RunOptions())
    judge = RunJob("qa", "qa_judge_1", Path("evals/judge"), None, Path("d.jsonl"), {}, None, {}, {}, (),  # type: ignore[arg-type]
                   RunOptions(), evaluation="judge")
    assert (batch.flow, batch.evaluation, batch.label) == ("qa", None, "qa")
    assert (judge.flow, judge.evaluation, judge.label) == ("qa", "judge", "qa/judge")
