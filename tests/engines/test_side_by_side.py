"""Side by side with prompt flow: the same upstream-shaped flows (copied from microsoft/promptflow into
tests/kinds/data/upstream) through llmops-ci and through prompt flow's own ``pf.run`` (what ``pf run create`` calls),
against one deterministic server on 127.0.0.1: every line's status and outputs and every run's metrics must be
identical, with all flows and evaluations of a step running side by side at --workers 4.

Flows: standard/maths-to-code (its func_exe swaps sys.stdout to capture print; 8 lines overlap, one fails), two
evaluations with aggregation side by side over that run (evaluation/eval-classification-accuracy logs accuracy,
evaluation/eval-chat-math logs accuracy and error_rate), flex-flows/chat-stream twice (two flex flows whose init
model_config comes from the same connection; the prompty streams), prompty/basic (prompt flow's prompty format,
endpoint from environment variables resolved from a connection), flex-flows/basic (a Python tool building its own
AzureOpenAI client from AZURE_OPENAI_ENDPOINT: ${open_ai_connection.api_base})."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai import FakeOpenAI, echo
from tests.helpers.pf_reference import pf_runs, same
from tests.helpers.projects import CliResult, Project, processes_using

pytestmark = pytest.mark.executor

UPSTREAM = Path(__file__).parents[1] / "kinds" / "data" / "upstream"
AZURE_KEY = "azure-key-" + "b" * 24
CONFIG = """\
version: 1
connections:
  open_ai_connection:
    type: azure_open_ai
    api_base: ${env:AZURE_BASE}
    api_key: ${env:AZURE_KEY}
    api_version: "2024-06-01"
flows:
  maths:
    path: flows/maths-to-code
    data: data/maths.jsonl
    column_mapping: {math_question: "${data.question}"}
    max_failed_lines: 1
    evaluations:
      accuracy:
        path: flows/eval-classification-accuracy
        column_mapping: {groundtruth: "${data.answer}", prediction: "${run.outputs.answer}"}
      chat-math:
        path: flows/eval-chat-math
        column_mapping: {groundtruth: "${data.answer}", prediction: "${run.outputs.answer}"}
  chat-a:
    path: flows/chat-stream
    data: data/chat-a.jsonl
    column_mapping: {question: "${data.question}"}
    init: {model_config: {connection: open_ai_connection, azure_deployment: gpt-4o}}
  chat-b:
    path: flows/chat-stream
    data: data/chat-b.jsonl
    column_mapping: {question: "${data.question}"}
    init: {model_config: {connection: open_ai_connection, azure_deployment: gpt-4o}}
  prompty:
    run_file: flows/prompty-basic/run.yml
  programmer:
    run_file: flows/flex-basic/run.yml
"""
# line 5 is answered wrong by the code (its label says 5), line 9 fails at the LLM node ("FAIL": the fake's 400)
MATHS = [{"question": f"What is 300000 plus {n}?", "answer": "5" if n == 5 else str(300000 + n)} for n in range(1, 9)]
MATHS.append({"question": "FAIL: what is 300000 plus 9?", "answer": "300009"})
CHAT_A = [{"question": f"Question A{n}: what is prompt flow?"} for n in range(6)]
CHAT_B = [{"question": f"Question B{n}: what is a flex flow?"} for n in range(6)]
ENV = {"AZURE_OPENAI_API_KEY": "${open_ai_connection.api_key}",
       "AZURE_OPENAI_ENDPOINT": "${open_ai_connection.api_base}", "AZURE_OPENAI_API_TYPE": "azure"}


def answer(prompt: str) -> str:
    if "QUESTION:" in prompt and "CODE:" in prompt:  # maths-to-code's code_gen: code that prints after a pause
        found = re.search(r"plus (\d+)", prompt.rsplit("QUESTION:", 1)[1])
        number = int(found.group(1)) if found else 0
        return json.dumps({"code": f"import time\ntime.sleep(0.2)\nprint({300000 + number})"})
    return echo(prompt)


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def ours(proj: Project, label: str) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    flow, _, evaluation = label.partition("/")
    folder = f".llmops/runs/{flow}" + (f"/evals/{evaluation}" if evaluation else "")
    lines = [json.loads(x) for x in proj.read(f"{folder}/lines.jsonl").splitlines() if x.strip()]
    summary = json.loads(proj.read(".llmops/summary.json"))["flows"][flow]
    metrics = summary["evaluations"][evaluation]["metrics"] if evaluation else {}
    return [(x["status"], x["outputs"]) for x in sorted(lines, key=lambda x: x["line"])], metrics


@pytest.mark.parametrize("how", ["one process", "CI steps"])
def test_lines_and_metrics_equal_pf_run(how: str, project: Callable[..., Project], cli: Callable[..., CliResult],
                                        fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    """``CI steps``: each step a ``python -m llmops_ci`` process of its own, as separate CI steps run it: the
    executor started before the command line is read, kept by batch-run, used by eval-run, ended by gate."""
    fake_openai.answer = answer
    proj = project({"llmops.yaml": CONFIG, "data/maths.jsonl": jsonl(MATHS), "data/chat-a.jsonl": jsonl(CHAT_A),
                    "data/chat-b.jsonl": jsonl(CHAT_B)}, base=False)
    for name in ("maths-to-code", "eval-classification-accuracy", "eval-chat-math", "chat-stream", "prompty-basic",
                 "flex-basic"):
        shutil.copytree(UPSTREAM / name, proj.path(f"flows/{name}"))
    monkeypatch.setenv("AZURE_BASE", fake_openai.url)
    monkeypatch.setenv("AZURE_KEY", AZURE_KEY)
    # flex-flows/basic takes the OpenAI client (and OPENAI_BASE_URL) when OPENAI_API_KEY is set: the Azure path here
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)

    def step(*argv: str) -> CliResult:
        if how == "one process":
            return cli(*argv)
        env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "TF_BUILD")}
        done = subprocess.run([sys.executable, "-m", "llmops_ci", *argv, "-v"], cwd=proj.root, capture_output=True,
                              text=True, timeout=600, env={**env, "LLMOPS_CI_KEEP_EXECUTOR": "120"})
        return CliResult(done.returncode, done.stdout, done.stderr)

    batch = step("batch-run", "--workers", "4")
    assert batch.code == 0, batch.err
    evals = step("eval-run", "--workers", "4")
    assert evals.code == 0, evals.err
    if how == "CI steps":
        assert "the prompt flow executor started ahead" in batch.err
        assert "the prompt flow executor kept by an earlier step" in evals.err
        step("gate")
        assert processes_using(tmp_path) == []
        assert proj.read(".llmops/logs/executor.log").count("promptflow loaded") == 1

    flows = proj.path("flows")
    data = proj.path("data")
    reference = pf_runs(tmp_path / "reference", [
        {"name": "maths", "flow": str(flows / "maths-to-code"), "data": str(data / "maths.jsonl"),
         "column_mapping": {"math_question": "${data.question}"}},
        {"name": "maths/accuracy", "flow": str(flows / "eval-classification-accuracy"), "run": "maths",
         "data": str(data / "maths.jsonl"),
         "column_mapping": {"groundtruth": "${data.answer}", "prediction": "${run.outputs.answer}"}},
        {"name": "maths/chat-math", "flow": str(flows / "eval-chat-math"), "run": "maths",
         "data": str(data / "maths.jsonl"),
         "column_mapping": {"groundtruth": "${data.answer}", "prediction": "${run.outputs.answer}"}},
        *({"name": name, "flow": str(flows / "chat-stream"), "data": str(data / f"{name}.jsonl"),
           "column_mapping": {"question": "${data.question}"},
           "init": {"model_config": {"connection": "open_ai_connection", "azure_deployment": "gpt-4o"}}}
          for name in ("chat-a", "chat-b")),
        {"name": "prompty", "flow": str(flows / "prompty-basic" / "basic.prompty"),
         "data": str(flows / "prompty-basic" / "data.jsonl"), "column_mapping": {"question": "${data.question}"},
         "environment_variables": ENV},
        {"name": "programmer", "flow": str(flows / "flex-basic"), "data": str(flows / "flex-basic" / "data.jsonl"),
         "column_mapping": {"text": "${data.text}"}, "environment_variables": ENV},
    ], [{"name": "open_ai_connection", "api_base": fake_openai.url, "api_key": AZURE_KEY,
         "api_version": "2024-06-01"}])

    for label, expected in reference.items():
        assert same(ours(proj, label)[0], expected[0]), label
        assert same(ours(proj, label)[1], expected[1]), label
    # the upstream answers themselves, so that equal can never mean equally wrong
    maths_lines, _ = reference["maths"]
    assert [o["answer"] if o else None for _, o in maths_lines] == [str(300000 + n) for n in range(1, 9)] + [None]
    assert [s for s, _ in maths_lines].count("Failed") == 1
    assert reference["maths/accuracy"][1] == {"accuracy": 0.88}
    assert reference["maths/chat-math"][1] == {"accuracy": 0.88, "error_rate": 0.12}
    assert [o for _, o in reference["chat-a"][0]] == [{"output": f"ECHO: {r['question']} "} for r in CHAT_A]
    summary = json.loads(proj.read(".llmops/summary.json"))["flows"]
    # every flow's calls were its own: tokens counted for each line of each flow (streamed ones included)
    for flow in ("maths", "chat-a", "chat-b", "prompty", "programmer"):
        lines = [json.loads(x) for x in proj.read(f".llmops/runs/{flow}/lines.jsonl").splitlines() if x.strip()]
        counted = [x["tokens"]["total"] > 0 for x in lines if x["status"] == "Completed"]
        assert counted and all(counted), (flow, [x["tokens"] for x in lines])
    assert summary["chat-a"]["run"]["lines_failed"] == 0 and summary["chat-b"]["run"]["lines_failed"] == 0
    assert AZURE_KEY not in batch.out + batch.err + evals.out + evals.err


SHOW_DAG = """\
inputs:
  n: {type: object}
  nested: {type: object}
outputs:
  shown: {type: string, reference: "${show.output.shown}"}
  kind: {type: string, reference: "${show.output.kind}"}
  n: {type: object, reference: "${show.output.n}"}
nodes:
- name: show
  type: python
  source: {type: code, path: show.py}
  inputs: {n: "${inputs.n}", nested: "${inputs.nested}"}
"""
SHOW_PY = """\
from promptflow.core import tool


@tool
def show(n: object, nested: object) -> dict:
    return {"shown": f"{n} {nested}", "kind": type(n).__name__, "n": n}
"""
SCORE_DAG = """\
inputs:
  n: {type: object}
  kind: {type: string}
  expected: {type: object}
outputs:
  score: {type: object, reference: "${score.output}"}
nodes:
- name: score
  type: python
  source: {type: code, path: score.py}
  inputs: {n: "${inputs.n}", kind: "${inputs.kind}", expected: "${inputs.expected}"}
- name: mean
  type: python
  source: {type: code, path: mean.py}
  inputs: {scores: "${score.output}"}
  aggregation: true
"""
SCORE_PY = """\
from promptflow.core import tool


@tool
def score(n: object, kind: str, expected: object) -> float:
    return float(repr(n) == repr(expected)) + (0.5 if kind == type(expected).__name__ else 0.0)
"""
MEAN_PY = """\
from promptflow.core import log_metric, tool


@tool
def mean(scores: list) -> float:
    value = sum(scores) / len(scores)
    log_metric("mean", value)
    return value
"""
NUMBERS_CONFIG = """\
version: 1
flows:
  plain:
    path: flows/show
    data: data/plain.jsonl
    column_mapping: {n: "${data.n}", nested: "${data.nested}"}
    evaluations:
      score:
        path: flows/score
        column_mapping: {n: "${run.outputs.n}", kind: "${run.outputs.kind}", expected: "${data.n}"}
  mixed:
    path: flows/show
    data: data/mixed.jsonl
    column_mapping: {n: "${data.n}", nested: "${data.nested}"}
    evaluations:
      score:
        path: flows/score
        column_mapping: {n: "${run.outputs.n}", kind: "${run.outputs.kind}", expected: "${data.n}"}
"""
# read without pandas (strings, ints, bools, nulls inside values) and with it: ints beside floats in a column (pandas
# makes them floats), floats its parser reads its own way, a float inside a value
PLAIN = ['{"n": 4, "nested": {"a": [1, null, true]}}', '{"n": "4", "nested": []}', '{"n": true, "nested": {}}']
MIXED = ['{"n": 4, "nested": {"x": 0.1}}', '{"n": 4.5, "nested": [1, 2.5]}', '{"n": 1.7976931348623157e308, '
         '"nested": 5e-324}', '{"n": 12345678901234567, "nested": "x"}']


def test_data_values_reach_the_flows_as_pf_run_gives_them(project: Callable[..., Project],
                                                          cli: Callable[..., CliResult], tmp_path: Path) -> None:
    """A value reaches the flow (and the evaluation, through the run's outputs) with the type and digits prompt
    flow's reader gives it, whichever way llmops-ci reads the file: ``4`` beside ``4.5`` in a column is ``4.0``."""
    proj = project({"llmops.yaml": NUMBERS_CONFIG, "data/plain.jsonl": "\n".join(PLAIN) + "\n",
                    "data/mixed.jsonl": "\n".join(MIXED) + "\n", "flows/show/flow.dag.yaml": SHOW_DAG,
                    "flows/show/show.py": SHOW_PY, "flows/score/flow.dag.yaml": SCORE_DAG,
                    "flows/score/score.py": SCORE_PY, "flows/score/mean.py": MEAN_PY}, base=False)
    batch = cli("batch-run", "--workers", "4")
    assert batch.code == 0, batch.err
    evals = cli("eval-run", "--workers", "4")
    assert evals.code == 0, evals.err

    flows, data = proj.path("flows"), proj.path("data")
    runs: list[dict[str, Any]] = []
    for name in ("plain", "mixed"):
        runs += [{"name": name, "flow": str(flows / "show"), "data": str(data / f"{name}.jsonl"),
                  "column_mapping": {"n": "${data.n}", "nested": "${data.nested}"}},
                 {"name": f"{name}/score", "flow": str(flows / "score"), "run": name,
                  "data": str(data / f"{name}.jsonl"), "column_mapping": {
                      "n": "${run.outputs.n}", "kind": "${run.outputs.kind}", "expected": "${data.n}"}}]
    reference = pf_runs(tmp_path / "reference", runs, [])
    for label, expected in reference.items():
        assert same(ours(proj, label)[0], expected[0]), (label, ours(proj, label)[0], expected[0])
        assert same(ours(proj, label)[1], expected[1]), label
    # prompt flow's own answers, so that the same can never mean equally wrong
    assert [o["kind"] for _, o in reference["mixed"][0]] == ["float", "float", "float", "float"]
    assert reference["mixed"][0][0][1]["shown"] == "4.0 {'x': 0.1}"
    assert [o["kind"] for _, o in reference["plain"][0]] == ["int", "int", "bool"]  # an object input parses "4"


# a flow output of each kind a Python tool returns, then an evaluation that shows what it got from ${run.outputs.v}
OUTPUTS_DAG = """\
inputs:
  k: {type: int}
outputs:
  v: {type: object, reference: "${make.output}"}
nodes:
- name: make
  type: python
  source: {type: code, path: make.py}
  inputs: {k: "${inputs.k}"}
"""
OUTPUTS_PY = """\
import datetime, decimal, math
from promptflow.core import tool

VALUES = [(1, 2), {1: "a", 2: "b"}, float("nan"), float("inf"), datetime.datetime(2024, 1, 2, 3, 4, 5),
          b"bytes", decimal.Decimal("1.10"), 1.0, None, "", {"a": float("nan")}, [1, 2.5], True, 3, 1e-7,
          {"x": (1, 2)}, "2024-01-01", {"nested": {"1": 2}}]

@tool
def make(k: int) -> object:
    return VALUES[k]
"""
SHOWN_DAG = """\
inputs:
  v: {type: object}
outputs:
  shown: {type: string, reference: "${show.output}"}
nodes:
- name: show
  type: python
  source: {type: code, path: show.py}
  inputs: {v: "${inputs.v}"}
"""
SHOWN_PY = """\
from promptflow.core import tool

@tool
def show(v: object) -> str:
    return f"{type(v).__name__}: {v!r}"
"""
OUTPUTS_CONFIG = """\
version: 1
flows:
  weird:
    path: flows/weird
    data: data/k.jsonl
    column_mapping: {k: "${data.k}"}
    evaluations:
      show:
        path: flows/show
        column_mapping: {v: "${run.outputs.v}"}
"""


def test_outputs_reach_the_evaluation_as_pf_run_gives_them(project: Callable[..., Project],
                                                           cli: Callable[..., CliResult], tmp_path: Path) -> None:
    """What an evaluation gets from a run's outputs is what pf run's gets (NaN and Infinity included: prompt flow
    writes them as such and reads them back); outputs that are not JSON fail their line in both."""
    from llmops_ci.results.state import finite

    values = 18  # len(VALUES) in OUTPUTS_PY
    proj = project({"llmops.yaml": OUTPUTS_CONFIG, "data/k.jsonl": "".join(f'{{"k": {i}}}\n' for i in range(values)),
                    "flows/weird/flow.dag.yaml": OUTPUTS_DAG, "flows/weird/make.py": OUTPUTS_PY,
                    "flows/show/flow.dag.yaml": SHOWN_DAG, "flows/show/show.py": SHOWN_PY}, base=False)
    assert cli("batch-run", "--workers", "2").code == 1  # three lines fail: their outputs are not JSON
    assert cli("eval-run", "--workers", "2").code == 0
    flows, data = proj.path("flows"), proj.path("data")
    reference = pf_runs(tmp_path / "reference", [
        {"name": "weird", "flow": str(flows / "weird"), "data": str(data / "k.jsonl"),
         "column_mapping": {"k": "${data.k}"}},
        {"name": "weird/show", "flow": str(flows / "show"), "run": "weird", "data": str(data / "k.jsonl"),
         "column_mapping": {"v": "${run.outputs.v}"}}], [])
    # our line records are valid JSON: a NaN or an infinity is recorded as null there
    expected = [(status, finite(outputs)) for status, outputs in reference["weird"][0]]
    assert same(ours(proj, "weird")[0], expected), (ours(proj, "weird")[0], expected)
    assert same(ours(proj, "weird/show")[0], reference["weird/show"][0]), (ours(proj, "weird/show")[0],
                                                                           reference["weird/show"][0])
    shown = [o["shown"] for _, o in reference["weird/show"][0]]
    assert "float: inf" in shown and "list: [1, 2]" in shown and len(shown) == values - 3


# inputs with defaults beside data columns of the same names, none of them mapped: prompt flow runs the defaults
DEFAULTS_DAG = """\
inputs:
  a: {type: string, default: null}
  b: {type: string, default: ""}
  c: {type: string, default: "cd"}
outputs:
  out: {type: string, reference: "${show.output}"}
nodes:
- name: show
  type: python
  source: {type: code, path: show.py}
  inputs: {a: "${inputs.a}", b: "${inputs.b}", c: "${inputs.c}"}
"""
DEFAULTS_PY = """\
from promptflow.core import tool


@tool
def show(a, b, c) -> str:
    return f"{a!r} {b!r} {c!r}"
"""
DEFAULTS_FLEX = """\
def run(a: str = None, b: str = "", c: str = "cd") -> str:
    return f"{a!r} {b!r} {c!r}"
"""
DEFAULTS_CONFIG = """\
version: 1
flows:
  dag:
    path: flows/dag
    data: data/abc.jsonl
    evaluations:
      again:
        path: flows/dag
        column_mapping: {b: "${run.outputs.out}"}
  flex:
    path: flows/flex
    data: data/abc.jsonl
"""


def test_unmapped_inputs_with_defaults_run_as_pf_run_runs_them(project: Callable[..., Project],
                                                               cli: Callable[..., CliResult], tmp_path: Path) -> None:
    """An input with a default runs on it even beside a same-named data column, unless mapped (a null default in a DAG
    is none; a flex ``= None`` is one): prompt flow's rule, followed, and said by lint and the run."""
    proj = project({"llmops.yaml": DEFAULTS_CONFIG, "flows/dag/flow.dag.yaml": DEFAULTS_DAG,
                    "flows/dag/show.py": DEFAULTS_PY, "flows/flex/flow.flex.yaml": "entry: entry:run\n",
                    "flows/flex/entry.py": DEFAULTS_FLEX,
                    "data/abc.jsonl": '{"a": "A1", "b": "B1", "c": "C1"}\n{"a": "A2", "b": "B2", "c": "C2"}\n'},
                   base=False)
    batch = cli("batch-run", "--workers", "2")
    assert batch.code == 0, batch.err
    evals = cli("eval-run", "--workers", "2")
    assert evals.code == 0, evals.err
    flows, data = proj.path("flows"), str(proj.path("data/abc.jsonl"))
    reference = pf_runs(tmp_path / "reference", [
        {"name": "dag", "flow": str(flows / "dag"), "data": data},
        {"name": "dag/again", "flow": str(flows / "dag"), "data": data, "run": "dag",
         "column_mapping": {"b": "${run.outputs.out}"}},
        {"name": "flex", "flow": str(flows / "flex"), "data": data}], [], workers=2)
    for label, expected in reference.items():
        assert same(ours(proj, label)[0], expected[0]), (label, ours(proj, label)[0], expected[0])
    # prompt flow's own answers, so that the same can never mean equally wrong
    assert [o for _, o in reference["dag"][0]] == [{"out": "'A1' '' 'cd'"}, {"out": "'A2' '' 'cd'"}]
    assert [o for _, o in reference["flex"][0]] == [{"output": "None '' 'cd'"}] * 2
    said = batch.err + evals.err
    for label, inputs in (("dag", "bc"), ("dag/again", "c"), ("flex", "abc")):
        for name in "abc":
            warning = f"{label}: input '{name}' runs on its default on every line"
            assert (warning in said) is (name in inputs), (warning, said)
    lint = cli("lint")
    assert lint.out.count("input-default-shadowed") == 6, lint.out
