"""Prompt flow's own example flows (copied from microsoft/promptflow into tests/kinds/data/upstream), run the way a
new user runs them: against the real executor, LLM calls over HTTP to the fake server on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import CliResult, Project

pytestmark = pytest.mark.executor

Cli = Callable[..., CliResult]
UPSTREAM = Path(__file__).parents[1] / "kinds" / "data" / "upstream"
AZURE_KEY = "azure-key-" + "a" * 24  # not "sk-": the upstream tool then takes the Azure client

CONFIG = """\
version: 1
connections:
  open_ai_connection:
    type: azure_open_ai
    api_base: ${env:AZURE_BASE}
    api_key: ${env:AZURE_KEY}
    api_version: "2024-06-01"
  openai:
    type: open_ai
    base_url: ${env:OPENAI_BASE_URL}
    api_key: ${env:OPENAI_API_KEY}
flows:
  basic:
    run_file: flows/basic/run.yml
    register: {name: basic}
    deploy:
      endpoint: basic-ep
      smoke_tests: smoke/*.json
  math:
    path: flows/eval-chat-math
    data: data/math.jsonl
"""
# line 3 predicts right, the rest wrong: with the inputs' defaults ("10" and "10") every line would be right
MATH_DATA = ('{"groundtruth": "1/3", "prediction": "2/6"}\n{"groundtruth": "253", "prediction": "506"}\n'
             '{"groundtruth": "2", "prediction": "3"}\n{"groundtruth": "7", "prediction": "8"}\n')


@pytest.fixture
def upstream(project: Callable[..., Project], run_env: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Project:
    proj = project({"llmops.yaml": CONFIG, "data/math.jsonl": MATH_DATA,
                    "smoke/hello.json": json.dumps({"request": {"text": "Rust"}, "expect": {"fields": ["output"]}})},
                   base=False)
    for name in ("basic", "eval-chat-math"):
        shutil.copytree(UPSTREAM / name, proj.path(f"flows/{name}"))
    monkeypatch.setenv("AZURE_BASE", run_env.url)
    monkeypatch.setenv("AZURE_KEY", AZURE_KEY)
    return proj


def summary(proj: Project) -> dict:
    return json.loads(proj.read(".llmops/summary.json"))


def test_run_yml_environment_variables_resolve_connections(cli: Cli, upstream: Project, run_env: FakeOpenAI) -> None:
    # standard/basic: run.yml sets AZURE_OPENAI_API_KEY: ${open_ai_connection.api_key}; no node uses the connection
    result = cli("batch-run", "--flow", "basic")
    assert result.code == 0, result.err
    run = summary(upstream)["flows"]["basic"]["run"]
    assert (run["lines_total"], run["lines_failed"]) == (3, 0)
    assert len(run_env.requests) == 3
    assert {r["path"].split("?")[0] for r in run_env.requests} == {"/openai/deployments/gpt-35-turbo-instruct/"
                                                                   "chat/completions"}
    assert {r["api_key"] for r in run_env.requests} == {AZURE_KEY}
    # a secret: never in the output, the log or the state dir (the private prompt flow home included)
    assert AZURE_KEY not in result.out + result.err
    assert not [p for p in upstream.path(".llmops").rglob("*") if p.is_file() and AZURE_KEY.encode() in p.read_bytes()]


def test_defaults_win_over_same_named_columns_as_in_prompt_flow(cli: Cli, upstream: Project) -> None:
    # evaluation/eval-chat-math: inputs with defaults ("10"), data with the same columns, no column_mapping: prompt
    # flow runs every line on the defaults (each scores 1), so must we, and both lint and the run say so
    result = cli("batch-run", "--flow", "math")
    assert result.code == 0, result.err
    assert "math: input 'groundtruth' runs on its default on every line, as prompt flow runs it, although " \
           "data/math.jsonl has a 'groundtruth' column: add 'groundtruth: ${data.groundtruth}' to column_mapping" \
           in result.err
    scores = [json.loads(x)["outputs"]["score"] for x in upstream.read(".llmops/runs/math/lines.jsonl").splitlines()]
    assert scores == [1, 1, 1, 1]
    lint = cli("lint")
    assert "input-default-shadowed" in lint.out and "flow input 'prediction' has a default" in lint.out
    upstream.replace("llmops.yaml", "    data: data/math.jsonl\n", "    data: data/math.jsonl\n    column_mapping: "
                     "{groundtruth: '${data.groundtruth}', prediction: '${data.prediction}'}\n")
    result = cli("batch-run", "--flow", "math")
    assert result.code == 0, result.err
    assert "runs on its default" not in result.err
    scores = [json.loads(x)["outputs"]["score"] for x in upstream.read(".llmops/runs/math/lines.jsonl").splitlines()]
    assert scores == [1, -1, -1, -1]


def test_a_flow_that_fails_as_a_whole(cli: Cli, upstream: Project) -> None:
    upstream.replace("flows/eval-chat-math/line_process.py", "from promptflow.core import tool",
                     "from promptflow.core import tool\nimport no_such_module_for_this_test")
    upstream.replace("llmops.yaml", "    data: data/math.jsonl\n",
                     "    data: data/math.jsonl\n    gate:\n      run.lines_failed: {max: 0}\n")
    result = cli("batch-run", "--flow", "math")
    assert result.code == 1
    run = summary(upstream)["flows"]["math"]["run"]
    assert (run["status"], run["lines_total"], run["lines_failed"]) == ("failed", 4, 4)
    assert "flows/eval-chat-math/line_process.py" in run["error"] and "no_such_module_for_this_test" in run["error"]
    assert "pf-home" not in run["error"] and "pf-home" not in result.err
    assert "math: the run failed as a whole before its 4 lines ran" in result.err
    assert "math failed as a whole" in result.err and "max_failed_lines" not in result.err
    gate = cli("gate", "--flow", "math")
    assert gate.code == 1
    assert summary(upstream)["flows"]["math"]["gate"]["checks"][0]["value"] == 4
    comment = cli("comment")
    assert "the run failed: " in comment.out and "PythonLoadError" in comment.out
    assert "no_such_module_for_this_test" in comment.out
    assert "\\" not in comment.out.split("comment ")[0]  # the terminal report is plain text


def test_unreachable_endpoint_is_exit_3_whichever_node_calls_it(cli: Cli, upstream: Project,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AZURE_BASE", f"http://127.0.0.1:{port}")
    # standard/basic builds its own client in a Python tool from AZURE_OPENAI_ENDPOINT: ${open_ai_connection.api_base};
    # that endpoint goes through the proxy too, so a refused connection reads exactly as from an LLM node: exit 3
    result = cli("batch-run", "--flow", "basic")
    assert result.code == 3, result.err
    assert "LLM endpoint of 'open_ai_connection' is down (connection refused" in result.err
    lines = [json.loads(x) for x in upstream.read(".llmops/runs/basic/lines.jsonl").splitlines()]
    assert {x["service_failure"] for x in lines} == {"connection refused"}


def test_environment_variables_reach_the_local_deployment(cli: Cli, upstream: Project, run_env: FakeOpenAI) -> None:
    assert cli("register", "--flow", "basic", "--force").code == 0
    result = cli("deploy", "--flow", "basic")
    assert result.code == 0, result.err
    err = result.err
    assert err.index("smoke test hello.json on blue: passed") < err.index("basic-ep: traffic")
    assert {r["api_key"] for r in run_env.requests} == {AZURE_KEY}
    assert AZURE_KEY not in result.out + result.err
