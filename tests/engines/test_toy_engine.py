"""An engine defined here, in the tests only (this module plus one line in ``engines.ENGINES``), runs batch-run and
test end to end on ``--backend local``: a kind that declares it (``FlowInfo.engine``) goes to it, every other flow
keeps going where it went before (prompt flow's executor for DAG, flex and prompt flow's prompty files)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from llmops_ci import engines
from llmops_ci.core.progress import Progress
from llmops_ci.engines.base import PROMPT_FLOW, Backend, BackendContext
from llmops_ci.kinds import KINDS, inspect
from llmops_ci.kinds.base import FlowInfo, FlowInput, Snapshot
from llmops_ci.results.records import LineResult, RunJob, RunRecord, TestJob, TestRecord
from tests.helpers.projects import CliResult, Project

Cli = Callable[..., CliResult]
UPSTREAM = Path(__file__).parents[1] / "kinds" / "data" / "upstream"


class LoudKind:
    """A folder with ``loud.yaml``; its flows declare the engine ``upper``."""

    name = "loud"

    def matches(self, path: Path) -> bool:
        return path.name == "loud.yaml" if path.is_file() else (path / "loud.yaml").is_file()

    def inspect(self, path: Path) -> FlowInfo:
        definition = path if path.is_file() else path / "loud.yaml"
        info = FlowInfo("loud", definition.parent, definition, engine="upper")
        info.inputs, info.outputs = {"word": FlowInput("word", "string", False)}, {"out"}
        return info

    def snapshot(self, info: FlowInfo, dest: Path, *, variant: str | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> Snapshot:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(info.folder, dest)
        return Snapshot(dest, dest / info.definition.name)

    def rules(self) -> list[Any]:
        return []


class UpperEngine(Backend):
    """Runs a loud flow in this process: each line's word, upper-cased."""

    name = "local"
    parallel_runs = True
    built: ClassVar[list[UpperEngine]] = []

    def __init__(self, ctx: BackendContext) -> None:
        self.ctx, self.closed = ctx, False
        UpperEngine.built.append(self)

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        rows = [json.loads(raw) for raw in job.data.read_text(encoding="utf-8").splitlines() if raw.strip()]
        column = str(job.column_mapping["word"])[len("${data."):-1]
        lines = [LineResult(number, "Completed", {"word": row[column]}, {"out": str(row[column]).upper()}, 0.01, {})
                 for number, row in enumerate(rows)]
        progress.finish(len(lines))
        return RunRecord(job.flow, job.name, "Completed", lines, 0.01, evaluation=job.evaluation)

    def test(self, job: TestJob) -> TestRecord:
        return TestRecord("Completed", {"out": str(job.inputs["word"]).upper()}, None, [], 0.0)

    def close(self) -> None:
        self.closed = True


LOUD_PROJECT = {
    "llmops.yaml": """\
        version: 1
        flows:
          loud:
            path: flows/loud
            data: data/words.jsonl
            column_mapping:
              word: ${data.text}
        """,
    "flows/loud/loud.yaml": "say: it loud\n",
    "data/words.jsonl": '{"text": "hello"}\n{"text": "world"}\n',
}


@pytest.fixture
def upper(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(KINDS, "loud", LoudKind())
    monkeypatch.setitem(engines.ENGINES, "upper", UpperEngine)
    UpperEngine.built.clear()
    yield


def test_a_toy_engine_runs_the_flows_that_declare_it(upper: None, cli: Cli, project: Callable[..., Project]) -> None:
    proj = project(LOUD_PROJECT, base=False)
    run = cli("batch-run")
    assert run.code == 0, run.err
    lines = [json.loads(raw) for raw in proj.read(".llmops/runs/loud/lines.jsonl").splitlines()]
    assert [line["outputs"] for line in lines] == [{"out": "HELLO"}, {"out": "WORLD"}]
    assert json.loads(proj.read(".llmops/summary.json"))["flows"]["loud"]["run"]["status"] == "completed"
    (engine,) = UpperEngine.built
    assert engine.closed  # the step's end closes the engines its runs built

    tested = cli("test", "--flow", "loud", "--input", "word=quiet")
    assert tested.code == 0, tested.err
    assert "QUIET" in tested.out + tested.err


def test_the_engine_a_kind_declares_picks_it_else_prompt_flow(upper: None, tmp_path: Path) -> None:
    (tmp_path / "loud.yaml").write_text("say: it\n", encoding="utf-8")
    loud = inspect(tmp_path)
    assert loud is not None and engines.engine_of(loud) == "upper"
    # routing as before: prompt flow's executor for DAG, flex and prompt flow's prompty format
    for path in ("maths-to-code", "flex-basic", "prompty-basic/basic.prompty"):
        info = inspect(UPSTREAM / path)
        assert info is not None and engines.engine_of(info) == PROMPT_FLOW, path
    del engines.ENGINES["upper"]
    assert engines.engine_of(loud) == PROMPT_FLOW  # without its registry line, a kind falls to prompt flow
