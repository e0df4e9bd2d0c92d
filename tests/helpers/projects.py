"""Test projects and helpers shared by the test modules (fixtures that build them are in conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_ci.lint.project import LintReport, LintRequest, lint
from tests.helpers.config import Config, Evaluation, Flow, Rule, openai_connection

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "web-classification"

def _as_written(config: Config) -> str:
    """Indented as the other files of a project dict are (``Project.write`` dedents them): tests append to it."""
    return textwrap.indent(config.yaml(), " " * 8) + " " * 8


# the valid project most tests start from: a DAG flow with a variant and an LLM node, its evaluation and gate
BASE_CONFIG = Config(
    connections={"openai": openai_connection()},
    flows={"classify": Flow(
        "flows/classify", data="data/classify.jsonl", column_mapping={"text": "${data.text}"},
        variant="${classify.variant_0}", connections={"classify": {"connection": "openai", "model": "gpt-4o-mini"}},
        evaluations={"accuracy": Evaluation("flows/eval", column_mapping={
            "groundtruth": "${data.label}", "prediction": "${run.outputs.category}"})},
        gate={"accuracy.accuracy": Rule(min=0.8, max_drop=0.05), "run.latency_p95": Rule(max=4.0)})})

BASE_PROJECT: dict[str, str] = {
    "llmops.yaml": _as_written(BASE_CONFIG),
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


@dataclass
class CliResult:
    code: int
    out: str
    err: str


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


@contextlib.contextmanager
def running(argv: list[str], **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """A command whose output (stdout and stderr together) is read at its end; killed if the test leaves first."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def interrupt(proc: subprocess.Popen[str], sig: int) -> str:
    """Send ``sig`` (a CI cancel, Ctrl-C) and wait for the end: its output."""
    proc.send_signal(sig)
    return proc.communicate(timeout=60)[0]


def snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime) for p in sorted(folder.rglob("*"))}


# flows that run for real: echo (python, a failing and a slow line) with its evaluation match, chat (an LLM
# node), and chat again through a run.yml
RUN_CONFIG = Config(
    connections={"openai": openai_connection()},
    flows={
        "echo": Flow("flows/echo", data="data/echo.jsonl", column_mapping={"text": "${data.text}"},
                     evaluations={"match": Evaluation("flows/match", column_mapping={
                         "loud": "${run.outputs.loud}", "expected": "${data.expected}"})}),
        "chat": Flow("flows/chat", data="data/chat.jsonl",
                     connections={"answer": {"connection": "openai", "model": "gpt-test"}}),
        "chat-run-file": Flow(run_file="runs/chat.run.yml"),
    })

RUN_PROJECT: dict[str, str] = {
    "llmops.yaml": _as_written(RUN_CONFIG),
    "flows/echo/flow.dag.yaml": """\
        inputs:
          text:
            type: string
        outputs:
          loud:
            type: string
            reference: ${shout.output}
        nodes:
        - name: shout
          type: python
          source:
            type: code
            path: shout.py
          inputs:
            text: ${inputs.text}
        """,
    "flows/echo/shout.py": """\
        import time

        from promptflow.core import tool


        @tool
        def shout(text: str) -> str:
            if text == "boom":
                raise ValueError("cannot shout boom")
            if text == "sleep":
                time.sleep(4)
            return text.upper()
        """,
    "data/echo.jsonl": '{"text": "a", "expected": "A"}\n{"text": "b", "expected": "B"}\n'
                       '{"text": "c", "expected": "X"}\n{"text": "d", "expected": "D"}\n',
    "flows/match/flow.dag.yaml": """\
        inputs:
          loud:
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
            loud: ${inputs.loud}
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
    "flows/match/match.py": """\
        from promptflow.core import tool


        @tool
        def match(loud: str, expected: str) -> float:
            return 1.0 if loud == expected else 0.0
        """,
    "flows/match/rate.py": """\
        from promptflow.core import log_metric, tool


        @tool
        def rate(scores: list) -> float:
            value = sum(scores) / len(scores)
            log_metric("match_rate", value)
            return value
        """,
    "flows/chat/flow.dag.yaml": """\
        inputs:
          question:
            type: string
        outputs:
          answer:
            type: string
            reference: ${answer.output}
        nodes:
        - name: answer
          type: llm
          source:
            type: code
            path: answer.jinja2
          connection: openai
          api: chat
          inputs:
            model: gpt-4o-mini
            question: ${inputs.question}
        """,
    "flows/chat/answer.jinja2": "# system:\nBe brief.\n# user:\n{{ question }}\n",
    "data/chat.jsonl": '{"question": "What is 1+1?"}\n{"question": "Name a colour"}\n{"question": "Say hi"}\n',
    "runs/chat.run.yml": """\
        $schema: https://azuremlschemas.azureedge.net/promptflow/latest/Run.schema.json
        flow: ../flows/chat
        data: ../data/chat.jsonl
        column_mapping:
          question: ${data.question}
        connections:
          answer:
            connection: openai
            model: gpt-from-run-yml
        """,
}


def classify_by_url(prompt: str) -> str:
    """A stand-in model: reads the last URL in the prompt and answers in the format the prompt asks for."""
    url = [word for word in prompt.split() if word.startswith("http")][-1].lower()
    rules = [(".pdf", "PDF"), ("/pdf/", "PDF"), ("sitrep", "PDF"), ("youtube", "Channel"), ("twitch", "Channel"),
             ("vimeo", "Channel"), ("podcast", "Channel"), ("imdb", "Movie"), ("letterboxd", "Movie"),
             ("netflix", "Movie"), ("rottentomatoes", "Movie"), ("moviedb", "Movie"), ("arxiv", "Academic"),
             ("acl", "Academic"), ("doi", "Academic"), ("ocw.", "Academic"), ("scholar", "Academic"),
             ("nature.com", "Academic"), ("linkedin", "Profile"), ("github.com/", "Profile"), ("about.me", "Profile"),
             ("/people/", "Profile"), ("x.com/", "Profile"), ("apps.", "App"), ("play.google", "App"),
             ("f-droid", "App"), ("store/", "App")]
    category = next((c for key, c in rules if key in url), "None")
    return json.dumps({"category": category, "evidence": "Url"})


# a prompt flow prompty file whose connection ("openai") is looked up by name in the store
CHAT_PROMPTY = """\
---
name: chat
model:
  api: chat
  configuration:
    type: openai
    connection: openai
    model: gpt-test
  parameters:
    max_tokens: 50
inputs:
  text:
    type: string
---
system:
Be brief.
user:
{{text}}
"""
