"""A flow kind and a run backend defined here, in the tests only, plug into every step unchanged."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops_ci.config import read_config
from llmops_ci.core.errors import UsageError
from llmops_ci.core.progress import Progress
from llmops_ci.core.schema import Scalar, Struct
from llmops_ci.diagnostics.findings import ERROR, RULES, Rule, finding, from_problem
from llmops_ci.diagnostics.origin import Origin
from llmops_ci.engines.base import Backend, BackendContext
from llmops_ci.kinds import KINDS, snapshot
from llmops_ci.kinds.base import Dependency, FlowInfo, FlowInput, Snapshot
from llmops_ci.results.records import LineResult, RunJob, RunRecord, TestJob, TestRecord
from llmops_ci.runs import BACKENDS
from tests.helpers.projects import CliResult, Project

Cli = Callable[..., CliResult]


class ToyKind:
    """A folder with ``toy.yaml`` (``entry: file.py:function``, ``inputs: [...]``, optional ``uses: [files]``)."""

    name = "toy"

    def matches(self, path: Path) -> bool:
        return path.name == "toy.yaml" if path.is_file() else (path / "toy.yaml").is_file()

    def inspect(self, path: Path) -> FlowInfo:
        definition = path if path.is_file() else path / "toy.yaml"
        data = yaml.safe_load(definition.read_text(encoding="utf-8")) or {}
        info = FlowInfo("toy", definition.parent, definition)
        info.inputs = {name: FlowInput(name, "string", False) for name in data.get("inputs", [])}
        info.outputs = {"out"}
        info.dependencies = [Dependency((info.folder / rel).resolve(), "toy use") for rel in data.get("uses", [])]
        file, _, function = str(data.get("entry", "")).partition(":")
        if not (info.folder / file).is_file() or not function:
            line = next(i for i, text in enumerate(definition.read_text().splitlines(), 1) if text.startswith("entry"))
            info.findings.append(finding("toy-entry-missing", str(definition), line, 1,
                                         f"entry '{data.get('entry')}' names no file:function in the flow folder"))
        return info

    def snapshot(self, info: FlowInfo, dest: Path, *, variant: str | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> Snapshot:
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(info.folder, dest)
        return Snapshot(dest, dest / info.definition.name)

    def rules(self) -> list[Rule]:
        return [Rule("toy-entry-missing", ERROR, "a toy flow whose entry does not exist")]


@dataclass(frozen=True)
class ToyAgentSpec:
    code: Path
    origin: Origin


class ToyAgentKind:
    """A kind declared by its flow entry's own block, ``toy_agent: {code: file.py}`` (the file's ``run`` is called
    per line), as an MLflow agent is by ``mlflow_agent:``: the kind owns the block's schema and value."""

    name = "toy_agent"
    block = "toy_agent"
    block_schema = Struct({"code": Scalar((str,), pattern=r"[^:\s]+\.py", hint=": name a .py file")},
                          required=("code",), what="in toy_agent")
    excludes = ("variant", "run_file")

    def matches(self, path: Path) -> bool:
        return False

    def inspect(self, path: Path) -> FlowInfo:
        raise UsageError(f"{path}: a toy agent is declared in llmops.yaml with a 'toy_agent:' block")

    def declare(self, path: Path, raw: Any, origin: Origin) -> ToyAgentSpec | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("code"), str):
            return None
        return ToyAgentSpec(path / raw["code"], origin)

    def inspect_declared(self, path: Path, spec: ToyAgentSpec) -> FlowInfo:
        info = FlowInfo("toy_agent", path, spec.code, engine="toy_agent")
        info.inputs = {"word": FlowInput("word", "string", False)}
        info.outputs = {"out"}
        if not spec.code.is_file():
            info.findings.append(from_problem(spec.origin.problem(("code",), f"{spec.code.name} does not exist",
                                                                  "toy-agent-code-missing")))
        return info

    def snapshot(self, info: FlowInfo, dest: Path, *, variant: str | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> Snapshot:
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(info.folder, dest)
        (dest / "toy.yaml").write_text(f"entry: {info.definition.name}:run\n")  # what ToyBackend runs
        return Snapshot(dest, dest / "toy.yaml")

    def rules(self) -> list[Rule]:
        return [Rule("toy-agent-code-missing", ERROR, "a toy agent's code file does not exist")]


class ToyBackend(Backend):
    """Runs a toy flow in this process, one call per data line."""

    name = "toy"
    routes_local_proxy = False

    def __init__(self, ctx: BackendContext) -> None:
        self.ctx = ctx

    def _function(self, job_info: FlowInfo, work: Path) -> Callable[..., Any]:
        snap = snapshot(job_info, work)
        entry = yaml.safe_load(snap.entry.read_text())["entry"]
        file, _, name = entry.partition(":")
        spec = importlib.util.spec_from_file_location(f"toy_{time.time_ns()}", snap.folder / file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, name)  # type: ignore[no-any-return]

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        function = self._function(job.info, self.ctx.state_dir / "toy-work" / job.name)
        lines = []
        started = time.monotonic()
        for number, raw in enumerate(job.data.read_text().splitlines()):
            row = json.loads(raw)
            inputs = {k: row[v[len("${data."):-1]] if isinstance(v, str) and v.startswith("${data.") else v
                      for k, v in job.column_mapping.items()} or {k: row[k] for k in job.info.inputs}
            try:
                lines.append(LineResult(number, "Completed", inputs, {"out": function(**inputs)}, 0.01, {}))
            except Exception as exc:
                lines.append(LineResult(number, "Failed", inputs, None, 0.01, {}, str(exc), type(exc).__name__))
            progress.update(number + 1)
        progress.finish(len(lines))
        return RunRecord(job.flow, job.name, "Completed", lines, time.monotonic() - started, evaluation=job.evaluation)

    def test(self, job: TestJob) -> TestRecord:
        function = self._function(job.info, self.ctx.state_dir / "toy-work" / "test")
        return TestRecord("Completed", {"out": function(**job.inputs)}, None, [], 0.0)


TOY_PROJECT = {
    "llmops.yaml": """\
        version: 1
        flows:
          shout:
            path: flows/shout
            data: data/words.jsonl
            column_mapping:
              word: ${data.text}
            register:
              name: shout-model
        """,
    "flows/shout/toy.yaml": "entry: shout.py:shout\ninputs: [word]\nuses: [../../shared/suffix.txt]\n",
    "flows/shout/shout.py": "def shout(word):\n    return word.upper() + '!'\n",
    "shared/suffix.txt": "!\n",
    "data/words.jsonl": '{"text": "hello"}\n{"text": "world"}\n',
}


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(KINDS, "toy", ToyKind())
    monkeypatch.setitem(BACKENDS, "toy", ToyBackend)
    rules = dict(RULES)  # linting a toy flow registers its kind's rules: the rule catalogue must not keep them
    yield
    RULES.clear()
    RULES.update(rules)


TOY_AGENT_PROJECT = {
    "llmops.yaml": """\
        version: 1
        flows:
          greet:
            path: flows/greet
            data: data/words.jsonl
            column_mapping:
              word: ${data.text}
            toy_agent:
              code: greet.py
        """,
    "flows/greet/greet.py": "def run(word):\n    return 'hi ' + word\n",
    "data/words.jsonl": '{"text": "ann"}\n{"text": "bo"}\n',
}


@pytest.fixture
def toy_agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(KINDS, "toy_agent", ToyAgentKind())  # the one registry line
    monkeypatch.setitem(BACKENDS, "toy", ToyBackend)
    rules = dict(RULES)
    yield
    RULES.clear()
    RULES.update(rules)


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True,
                   capture_output=True)


def test_toy_kind_and_backend_through_every_step(toy: None, cli: Cli, project: Callable[..., Project]) -> None:
    proj = project(TOY_PROJECT, base=False)
    assert "toy" in cli("batch-run", "--help").out

    lint = cli("lint", "--format", "json")
    assert lint.code == 0, lint.err
    assert json.loads(lint.out) == {"findings": []}

    run = cli("batch-run", "--backend", "toy")
    assert run.code == 0, run.err
    summary = json.loads(proj.read(".llmops/summary.json"))
    assert summary["flows"]["shout"]["run"]["status"] == "completed"
    assert summary["flows"]["shout"]["run"]["lines_total"] == 2
    lines = [json.loads(raw) for raw in proj.read(".llmops/runs/shout/lines.jsonl").splitlines()]
    assert [line["outputs"] for line in lines] == [{"out": "HELLO!"}, {"out": "WORLD!"}]

    registered = cli("register", "--force")
    assert registered.code == 0, registered.err
    assert "registered shout-model:" in registered.err
    assert cli("register", "--force").code == 0
    versions = list((proj.root / ".llmops" / "registry" / "shout-model").iterdir())
    assert len(versions) == 1 and (versions[0] / "flow" / "shout.py").is_file()

    comment = cli("comment")
    assert comment.code == 0
    assert "shout" in proj.read(".llmops/comment.md")


def test_toy_changed_since_follows_the_kinds_dependencies(toy: None, cli: Cli,
                                                           project: Callable[..., Project]) -> None:
    proj = project(TOY_PROJECT, base=False)
    _git(proj.root, "init", "-q", "-b", "main")
    (proj.root / ".gitignore").write_text(".llmops/\n")
    _git(proj.root, "add", "-A")
    _git(proj.root, "commit", "-q", "-m", "base")
    unchanged = cli("batch-run", "--backend", "toy", "--changed-since", "HEAD")
    assert unchanged.code == 0 and "unchanged since HEAD" in unchanged.err
    proj.write("shared/suffix.txt", "?\n")  # outside the flow folder: only the kind knows the flow uses it
    changed = cli("batch-run", "--backend", "toy", "--changed-since", "HEAD")
    assert changed.code == 0, changed.err
    assert "shared/suffix.txt changed (toy use)" in changed.err


def test_toy_lint_finding_has_file_and_line(toy: None, cli: Cli, project: Callable[..., Project]) -> None:
    project({**TOY_PROJECT, "flows/shout/toy.yaml": "inputs: [word]\nentry: missing.py:shout\n"}, base=False)
    result = cli("lint", "--format", "json")
    assert result.code == 1
    (hit,) = json.loads(result.out)["findings"]
    assert hit["rule"] == "toy-entry-missing" and hit["line"] == 2 and hit["severity"] == "error"
    assert cli("batch-run", "--backend", "toy").code == 2  # preflight stops before anything runs


def test_backend_that_cannot_route_the_llm_cache_is_refused(toy: None, cli: Cli,
                                                            project: Callable[..., Project]) -> None:
    project(TOY_PROJECT, base=False)
    result = cli("batch-run", "--backend", "toy", "--llm-cache", "replay")
    assert result.code == 2
    assert "--backend toy" in result.err and "--llm-cache off" in result.err


def test_release_only_backend_cannot_run(cli: Cli, project: Callable[..., Project],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(BACKENDS, "azureml")  # azureml as it was before it ran flows: releases only
    project()
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 2 and "is not available to run flows" in result.err


def test_toy_config_declared_kind_owns_its_block(toy_agent: None, cli: Cli, project: Callable[..., Project]) -> None:
    """A kind declared by a block of its own in a flow entry: one module (ToyAgentKind) and one registry line; config,
    lint and runs read the block through the kinds registry."""
    proj = project(TOY_AGENT_PROJECT, base=False)
    config, problems = read_config(proj.root / "llmops.yaml", None)
    assert config is not None and problems == []
    assert config.flows["greet"].block(ToyAgentSpec) == ToyAgentSpec(proj.root / "flows" / "greet" / "greet.py",
                                                                     Origin(config.doc, ("flows", "greet",
                                                                                         "toy_agent")))
    lint = cli("lint", "--format", "json")
    assert lint.code == 0, lint.err
    assert json.loads(lint.out) == {"findings": []}

    run = cli("batch-run", "--backend", "toy")
    assert run.code == 0, run.err
    lines = [json.loads(raw) for raw in proj.read(".llmops/runs/greet/lines.jsonl").splitlines()]
    assert [line["outputs"] for line in lines] == [{"out": "hi ann"}, {"out": "hi bo"}]


def test_toy_config_declared_block_is_checked_by_its_kind(toy_agent: None, cli: Cli,
                                                          project: Callable[..., Project]) -> None:
    config = TOY_AGENT_PROJECT["llmops.yaml"]
    project({**TOY_AGENT_PROJECT, "llmops.yaml": config.replace("code: greet.py", "code: 3")}, base=False)
    result = cli("lint", "--format", "json")
    assert result.code == 1
    hits = json.loads(result.out)["findings"]  # not built from a broken block, the folder is no flow either
    assert [(h["rule"], h["line"]) for h in hits if "'code' must be a string" in h["message"]] == [("wrong-type", 9)]

    project({**TOY_AGENT_PROJECT, "llmops.yaml": config.replace("code: greet.py", "code: gone.py")}, base=False)
    result = cli("lint", "--format", "json")
    (hit,) = json.loads(result.out)["findings"]
    assert hit["rule"] == "toy-agent-code-missing" and hit["line"] == 9 and hit["path"] == "llmops.yaml"
    assert cli("batch-run", "--backend", "toy").code == 2  # preflight stops before anything runs

    project({**TOY_AGENT_PROJECT, "llmops.yaml": config.replace("    toy_agent:", "    variant: ${a.b}\n"
                                                                "            toy_agent:")}, base=False)
    result = cli("lint", "--format", "json")
    assert result.code == 1
    assert any("either 'variant' or 'toy_agent'" in f["message"] for f in json.loads(result.out)["findings"])
