"""Fixture factories: projects written to tmp_path, linted or run through the real CLI."""

from __future__ import annotations

import io
import os
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmops_ci.cli import main
from llmops_ci.lint.project import LintReport, LintRequest, lint
from tests.fake_openai import FakeOpenAI

BASE_PROJECT: dict[str, str] = {
    "llmops.yaml": """\
        version: 1
        connections:
          openai:
            type: open_ai
            base_url: ${env:OPENAI_BASE_URL}
            api_key: ${env:OPENAI_API_KEY}
        flows:
          classify:
            path: flows/classify
            data: data/classify.jsonl
            column_mapping:
              text: ${data.text}
            variant: ${classify.variant_0}
            connections:
              classify: {connection: openai, model: gpt-4o-mini}
            evaluations:
              accuracy:
                path: flows/eval
                column_mapping:
                  groundtruth: ${data.label}
                  prediction: ${run.outputs.category}
            gate:
              accuracy.accuracy: {min: 0.8, max_drop: 0.05}
              run.latency_p95: {max: 4.0}
        """,
    "flows/classify/flow.dag.yaml": """\
        inputs:
          text:
            type: string
          history:
            type: list
            default: []
        outputs:
          category:
            type: string
            reference: ${parse.output.category}
        nodes:
        - name: clean
          type: python
          source:
            type: code
            path: clean.py
          inputs:
            text: ${inputs.text}
        - name: classify
          use_variants: true
        - name: parse
          type: python
          source:
            type: code
            path: parse.py
          inputs:
            raw: ${classify.output}
        node_variants:
          classify:
            default_variant_id: variant_0
            variants:
              variant_0:
                node:
                  type: llm
                  source:
                    type: code
                    path: classify.jinja2
                  connection: openai
                  api: chat
                  inputs:
                    deployment_name: gpt-4o-mini
                    text: ${clean.output}
                    history: ${inputs.history}
              variant_1:
                node:
                  type: llm
                  source:
                    type: code
                    path: classify.jinja2
                  connection: openai
                  api: chat
                  inputs:
                    deployment_name: gpt-4o-mini
                    temperature: 0.2
                    text: ${clean.output}
                    history: ${inputs.history}
        """,
    "flows/classify/clean.py": """\
        from promptflow.core import tool


        @tool
        def clean(text: str, limit: int = 2000) -> str:
            return " ".join(text.split())[:limit]
        """,
    "flows/classify/parse.py": """\
        import json

        from promptflow.core import tool


        @tool
        def parse(raw: str) -> dict:
            try:
                return json.loads(raw)
            except ValueError:
                return {"category": "None"}
        """,
    "flows/classify/classify.jinja2": """\
        # system:
        Classify the text as App, Movie or None. Answer with JSON.
        {% for turn in history %}
        # user:
        {{ turn.inputs.text }}
        # assistant:
        {{ turn.outputs.category }}
        {% endfor %}
        {% set label = "Text" %}
        # user:
        {{ label }}: {{ text }}
        """,
    "flows/eval/flow.dag.yaml": """\
        inputs:
          groundtruth:
            type: string
          prediction:
            type: string
        outputs:
          grade:
            type: string
            reference: ${grade.output}
        nodes:
        - name: grade
          type: python
          source:
            type: code
            path: grade.py
          inputs:
            groundtruth: ${inputs.groundtruth}
            prediction: ${inputs.prediction}
        - name: accuracy
          type: python
          source:
            type: code
            path: accuracy.py
          inputs:
            grades: ${grade.output}
          aggregation: true
        """,
    "flows/eval/grade.py": """\
        from promptflow.core import tool


        @tool
        def grade(groundtruth: str, prediction: str) -> str:
            return "Correct" if groundtruth.lower() == prediction.lower() else "Incorrect"
        """,
    "flows/eval/accuracy.py": """\
        from promptflow.core import log_metric, tool


        @tool
        def accuracy(grades: list) -> float:
            value = sum(g == "Correct" for g in grades) / max(len(grades), 1)
            log_metric("accuracy", value)
            return value
        """,
    "data/classify.jsonl": """\
        {"text": "Download our app", "label": "App"}
        {"text": "Watch the trailer", "label": "Movie"}
        {"text": "Nothing here", "label": "None"}
        """,
}


@dataclass
class Project:
    root: Path

    def path(self, rel: str) -> Path:
        return self.root / rel

    def read(self, rel: str) -> str:
        return self.path(rel).read_text(encoding="utf-8")

    def write(self, rel: str, text: str) -> None:
        target = self.path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text), encoding="utf-8")

    def replace(self, rel: str, old: str, new: str) -> None:
        text = self.read(rel)
        assert old in text, f"{old!r} not in {rel}"
        self.path(rel).write_text(text.replace(old, new, 1), encoding="utf-8")

    def lint(self, config: str | None = "llmops.yaml", paths: tuple[str, ...] = ()) -> LintReport:
        if paths:
            return lint(LintRequest(paths=tuple(self.path(p) for p in paths)))
        return lint(LintRequest(config=self.path(config) if config else None))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Project]:
    """A factory: ``project()`` writes the valid base project (or ``project(files)``) and chdirs into it."""

    def make(files: dict[str, str] | None = None, base: bool = True) -> Project:
        proj = Project(tmp_path)
        for rel, text in {**(BASE_PROJECT if base else {}), **(files or {})}.items():
            proj.write(rel, text)
        monkeypatch.chdir(tmp_path)
        return proj

    return make


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Runs ``llmops-ci`` in-process through ``main`` with a clean CI environment."""
    for var in ("GITHUB_ACTIONS", "TF_BUILD"):
        monkeypatch.delenv(var, raising=False)

    def run(*argv: str) -> CliResult:
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors and --help/--version
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "TF_BUILD")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


__all__ = ["CliResult", "Project", "io"]


# --- real runs ---------------------------------------------------------------------------------------

@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


def processes_using(path: Path) -> list[str]:
    """Processes whose environment or command line mentions ``path`` (our runner, pf's workers)."""
    found = []
    needle = str(path).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            blob = (proc / "environ").read_bytes() + (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().split()[2]
        except OSError:
            continue
        if needle in blob and state != "Z":
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ")[:120]
            found.append(f"{proc.name}: {command!r}")
    return found


def snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def run_env(monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI, tmp_path: Path) -> Iterator[FakeOpenAI]:
    """Connection settings pointing at the fake server; afterwards no process of the run may be left."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-" + "k" * 24)
    yield fake_openai
    assert processes_using(tmp_path) == []
