"""A run target defined here, in the tests only (this module plus one line in ``runs.BACKENDS``), runs batch-run
end to end: a target somewhere else that takes every job at once, uses its own connections, cannot reach the local
LLM cache, and accepts prompt flow's engine only, refused through ``check_engine`` like Azure ML's."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import ClassVar

import pytest

from llmops_ci.core.errors import Problem, UsageError
from llmops_ci.core.progress import Progress
from llmops_ci.engines import engine_of
from llmops_ci.engines.base import Backend, BackendContext, EngineUse, check_engine
from llmops_ci.results.records import LineResult, RunJob, RunRecord, TestJob, TestRecord
from llmops_ci.runs import BACKENDS
from tests.helpers.projects import CliResult, Project

Cli = Callable[..., CliResult]
PROMPTY2 = """\
---
name: v2
model:
  id: gpt-4o-mini
  provider: openai
  connection: {kind: key, endpoint: "${env:OPENAI_BASE_URL}", apiKey: "${env:OPENAI_API_KEY}"}
inputs:
  - name: text
    kind: string
---
user:
{{text}}
"""


class EchoCloud(Backend):
    """Answers each line with its text upper-cased, as a remote service would: every job submitted at once."""

    name = "echo-cloud"
    routes_local_proxy = False
    needs_local_connections = False
    submits_together = True
    batches: ClassVar[list[list[str]]] = []

    def __init__(self, ctx: BackendContext) -> None:
        self.ctx = ctx

    def run_many(self, jobs: list[RunJob], progress_factory: Callable[[str, int], Progress]) -> list[RunRecord]:
        check_engine(f"--backend {self.name}", self.engines, [
            EngineUse(job.label, engine_of(job.info),
                      lambda message, job=job: Problem(str(job.flow), None, None, message, "toy-unsupported"))
            for job in jobs])
        EchoCloud.batches.append([job.label for job in jobs])
        return [self._one(job, progress_factory(job.label, 0)) for job in jobs]

    def _one(self, job: RunJob, progress: Progress) -> RunRecord:
        rows = [json.loads(raw) for raw in job.data.read_text(encoding="utf-8").splitlines() if raw.strip()]
        lines = [LineResult(number, "Completed", {"text": row["text"]}, {"category": str(row["text"]).upper()},
                            0.01, {}) for number, row in enumerate(rows)]
        progress.finish(len(lines))
        return RunRecord(job.flow, job.name, "Completed", lines, 0.1, evaluation=job.evaluation)

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        return self.run_many([job], lambda label, total: progress)[0]

    def test(self, job: TestJob) -> TestRecord:
        raise UsageError("echo-cloud runs whole data sets only")


@pytest.fixture
def echo_cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(BACKENDS, "echo-cloud", EchoCloud)
    EchoCloud.batches.clear()
    yield


def test_a_toy_target_runs_batch_run_end_to_end(echo_cloud: None, cli: Cli, project: Callable[..., Project]) -> None:
    proj = project()
    assert "echo-cloud" in cli("batch-run", "--help").out
    run = cli("batch-run", "--backend", "echo-cloud")
    assert run.code == 0, run.err
    assert EchoCloud.batches == [["classify"]]
    summary = json.loads(proj.read(".llmops/summary.json"))
    assert summary["flows"]["classify"]["run"]["status"] == "completed"
    lines = [json.loads(raw) for raw in proj.read(".llmops/runs/classify/lines.jsonl").splitlines()]
    assert lines and all(line["outputs"]["category"] == line["inputs"]["text"].upper() for line in lines)


def test_a_toy_target_gets_the_default_capabilities(echo_cloud: None, cli: Cli,
                                                    project: Callable[..., Project]) -> None:
    project()
    dry = cli("batch-run", "--backend", "echo-cloud", "--dry-run")  # no dry_run of its own: run.yml documents
    assert dry.code == 0, dry.err
    assert "flow:" in dry.out and "classify" in dry.out and EchoCloud.batches == []
    cached = cli("batch-run", "--backend", "echo-cloud", "--llm-cache", "replay")
    assert cached.code == 2 and "--backend echo-cloud" in cached.err


def test_a_toy_target_refuses_an_engine_it_does_not_have(echo_cloud: None, cli: Cli,
                                                         project: Callable[..., Project]) -> None:
    proj = project()
    proj.replace("llmops.yaml", "flows:\n",
                 "flows:\n  ask:\n    path: flows/ask/ask.prompty\n    data: data/classify.jsonl\n")
    proj.write("flows/ask/ask.prompty", PROMPTY2)
    result = cli("batch-run", "--backend", "echo-cloud")
    assert result.code == 2, result.err
    assert ("'ask' runs on the prompty engine, which --backend echo-cloud does not have; run it with --backend "
            "local") in result.err
    assert EchoCloud.batches == []  # nothing was submitted
