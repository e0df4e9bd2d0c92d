"""eval-run over an MLflow agent's batch run: prompt flow evaluation flows (DAG and flex) score the agent's outputs
as they were kept (no second prediction), and their per-line scores pair in the gate."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.engines.mlflow_agents import RESPONSES_AGENT
from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import CliResult, Project

pytest.importorskip("mlflow", reason="needs the [mlflow] extra")
pytestmark = pytest.mark.executor

Cli = Callable[..., CliResult]

AGENT_PROJECT: dict[str, str] = {
    "llmops.yaml": """\
        version: 1
        flows:
          support:
            path: agents/support
            mlflow_agent:
              code: agent.py
              interface: responses
              resources:
                serving_endpoint: [support-llm]
              pip_requirements: [mlflow-skinny==3.17.2, openai]
            data: data/support.jsonl
            max_failed_lines: 1
            evaluations:
              exact:
                path: flows/exact
                column_mapping:
                  answer: ${run.outputs.output_text}
                  expected: ${data.expected}
                scores: {match_rate: score}
              words:
                path: flows/words
                column_mapping:
                  answer: ${run.outputs.output_text}
                  expected: ${data.expected}
                scores: {overlap: overlap}
            gate:
              exact.match_rate: {min: 0.5, max_drop: 0.1}
              words.overlap: {min: 0.5}
        """,
    "agents/support/agent.py": RESPONSES_AGENT,
    "data/support.jsonl": "".join(json.dumps(line) + "\n" for line in [
        {"input": "hello", "expected": "ECHO: hello"},
        {"input": [{"role": "user", "content": "where is my order"}], "expected": "ECHO: where is my order"},
        {"input": "refund please", "expected": "ECHO: no refund"},
        {"input": "please FAIL this one", "expected": "anything"},
    ]),
    "flows/exact/flow.dag.yaml": """\
        inputs:
          answer:
            type: string
          expected:
            type: string
        outputs:
          score:
            type: double
            reference: ${match.output}
        nodes:
        - name: match
          type: python
          source:
            type: code
            path: match.py
          inputs:
            answer: ${inputs.answer}
            expected: ${inputs.expected}
        - name: rate
          type: python
          source:
            type: code
            path: rate.py
          inputs:
            scores: ${match.output}
          aggregation: true
        """,
    "flows/exact/match.py": """\
        from promptflow.core import tool


        @tool
        def match(answer: str, expected: str) -> float:
            return 1.0 if answer == expected else 0.0
        """,
    "flows/exact/rate.py": """\
        from promptflow.core import log_metric, tool


        @tool
        def rate(scores: list) -> float:
            value = sum(scores) / len(scores)
            log_metric("match_rate", value)
            return value
        """,
    "flows/words/flow.flex.yaml": "entry: words:Overlap\n",
    "flows/words/words.py": """\
        from typing import TypedDict


        class Score(TypedDict):
            overlap: float


        class Overlap:
            def __init__(self) -> None:
                pass

            def __call__(self, answer: str, expected: str) -> Score:
                said, wanted = set(answer.lower().split()), set(expected.lower().split())
                return Score(overlap=round(len(said & wanted) / len(wanted), 4) if wanted else 0.0)

            def __aggregate__(self, line_results: list) -> dict:
                values = [r["overlap"] for r in line_results]
                return {"overlap": round(sum(values) / len(values), 4) if values else 0.0}
        """,
}


def test_evaluation_flows_score_an_agent_run_without_predicting_again(
        cli: Cli, project: Callable[..., Project], run_env: FakeOpenAI) -> None:
    proj = project(AGENT_PROJECT, base=False)
    result = cli("batch-run", "--flow", "support", "--workers", "2")
    assert result.code == 0, result.err
    run = json.loads(proj.read(".llmops/summary.json"))["flows"]["support"]["run"]
    assert (run["lines_total"], run["lines_failed"]) == (4, 1)
    base = proj.path(f".llmops/runs/.base/{run['name']}")
    kept = [json.loads(x) for x in (base / "outputs.jsonl").read_text().splitlines()]
    assert [(k["line_number"], k["output_text"]) for k in kept] == [
        (0, "ECHO: hello"), (1, "ECHO: where is my order"), (2, "ECHO: refund please")]  # the failed line is not
    assert kept[0]["output"][0]["content"][0]["text"] == "ECHO: hello"
    assert json.loads((base / "llmops-run.json").read_text())["data"] == str(proj.path("data/support.jsonl"))
    predicted = len(run_env.requests)
    assert predicted == 4

    result = cli("eval-run", "--flow", "support")
    assert result.code == 0, result.err
    assert len(run_env.requests) == predicted  # scored from the kept outputs: the agent did not run again
    evaluations = json.loads(proj.read(".llmops/summary.json"))["flows"]["support"]["evaluations"]
    assert evaluations["exact"]["metrics"]["match_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert evaluations["words"]["metrics"]["overlap"] == pytest.approx((1 + 1 + 2 / 3) / 3, abs=1e-3)
    scored = [json.loads(x) for x in proj.read(".llmops/runs/support/evals/exact/lines.jsonl").splitlines()]
    assert sorted((x["line"], x["outputs"]["score"]) for x in scored) == [(0, 1.0), (1, 1.0), (2, 0.0)]

    for step in ("batch-run", "eval-run"):  # the baseline: another run of the same agent on the same data
        assert cli(step, "--flow", "support", "--state-dir", "base").code == 0
    gate = cli("gate", "--flow", "support", "--baseline", "base")
    assert gate.code == 0, gate.err
    checks = json.loads(proj.read(".llmops/summary.json"))["flows"]["support"]["gate"]["checks"]
    drop = next(c for c in checks if c["metric"] == "exact.match_rate" and c["rule"] == "max_drop")
    # paired by data line: the three lines both runs scored (too few for an interval, and said so)
    assert (drop["verdict"], drop["delta"], drop["lines"]) == ("too few lines", 0.0, 3)
    assert cli("comment").code == 0
    comment = proj.read(".llmops/comment.md")  # the gate table (markdown-escaped names)
    assert "| exact\\.match\\_rate | 0.6667  | 0.6667     | 0   |" in comment
    assert "| words\\.overlap     | 0.8889  |" in comment
