"""prompt flow's own prompty format runs on prompt flow wherever prompt flow runs it: as a flow, as an evaluation,
under `test`, with the process opt-out (upstream prompty/basic and prompty/eval-apology, copied into
tests/kinds/data/upstream). Before: exit 2 "the prompty package cannot load this file: Invalid Property
discriminator field 'kind'", while lint said "No problems found"."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.openai import FakeOpenAI, echo
from tests.helpers.projects import CliResult, Project

pytestmark = pytest.mark.executor

UPSTREAM = Path(__file__).parents[1] / "kinds" / "data" / "upstream"
CONFIG = """\
version: 1
connections:
  open_ai_connection:
    type: azure_open_ai
    api_base: ${env:AZURE_BASE}
    api_key: ${env:AZURE_KEY}
    api_version: "2024-06-01"
flows:
  prompty:
    run_file: flows/prompty-basic/run.yml
    evaluations:
      apology:
        path: flows/prompty-eval-apology/apology.prompty
        column_mapping: {question: "${data.question}", answer: "${run.outputs.output}", messages: "[]"}
  prompty-process:
    path: flows/prompty-basic/basic.prompty
    data: flows/prompty-basic/data.jsonl
    column_mapping: {question: "${data.question}"}
    environment_variables:
      LLMOPS_CI_EXECUTOR: process
      AZURE_OPENAI_API_KEY: ${open_ai_connection.api_key}
      AZURE_OPENAI_ENDPOINT: ${open_ai_connection.api_base}
"""


def answer(prompt: str) -> str:
    return '{"apology": 0}' if "apologized" in prompt else echo(prompt)


def test_prompt_flow_prompty_runs_on_prompt_flow_everywhere(project: Callable[..., Project],
                                                            cli: Callable[..., CliResult], fake_openai: FakeOpenAI,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    fake_openai.answer = answer
    proj = project({"llmops.yaml": CONFIG}, base=False)
    for name in ("prompty-basic", "prompty-eval-apology"):
        shutil.copytree(UPSTREAM / name, proj.path(f"flows/{name}"))
    monkeypatch.setenv("AZURE_BASE", fake_openai.url)
    monkeypatch.setenv("AZURE_KEY", "azure-key-" + "d" * 24)
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    assert cli("lint").code == 0
    questions = [json.loads(x)["question"] for x in proj.read("flows/prompty-basic/data.jsonl").splitlines()]

    batch = cli("batch-run")
    assert batch.code == 0, batch.err
    for flow in ("prompty", "prompty-process"):
        found = [json.loads(x) for x in proj.read(f".llmops/runs/{flow}/lines.jsonl").splitlines()]
        assert [x["outputs"] for x in found] == [{"output": f"ECHO: {q}"} for q in questions], flow
    assert "prompty-process: runs in its own prompt flow process (pf.run)" in batch.err

    evals = cli("eval-run", "--flow", "prompty")
    assert evals.code == 0, evals.err
    scores = [json.loads(x)["outputs"] for x in proj.read(".llmops/runs/prompty/evals/apology/lines.jsonl")
              .splitlines()]
    assert scores == [{"apology": 0}] * 3

    test = cli("test", "--flow", "prompty", "--input", "question=What is a prompty?")
    assert test.code == 0, test.err
    assert "ECHO: What is a prompty?" in test.out
