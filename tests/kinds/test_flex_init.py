"""``init:`` in llmops.yaml gives a flex class entry its ``__init__`` arguments: checked by lint, passed to the run."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.helpers.projects import CliResult, Project

Cli = Callable[..., CliResult]

GREETER = {
    "llmops.yaml": """\
        version: 1
        flows:
          greet:
            path: flows/greet
            data: data/names.jsonl
            init:
              greeting: ${env:GREETING}
              times: 2
        """,
    "flows/greet/flow.flex.yaml": "entry: greeter:Greeter\n",
    "flows/greet/greeter.py": """\
        class Greeter:
            def __init__(self, greeting: str, times: int = 1) -> None:
                self.greeting, self.times = greeting, times

            def __call__(self, name: str) -> str:
                return " ".join([f"{self.greeting}, {name}"] * self.times)
        """,
    "data/names.jsonl": '{"name": "Ada"}\n{"name": "Alan"}\n',
}


def test_lint_checks_init_against_the_class(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project(GREETER, base=False)
    assert json.loads(cli("lint", "--format", "json").out) == {"findings": []}
    proj.replace("llmops.yaml", "      greeting: ${env:GREETING}\n", "      greting: hi\n")
    findings = json.loads(cli("lint", "--format", "json").out)["findings"]
    messages = {f["message"] for f in findings if f["rule"] == "flex-init-mismatch"}
    assert any("'greting' is not a parameter" in m and "did you mean 'greeting'" in m for m in messages)
    assert any("requires greeting" in m for m in messages)
    assert all(f["path"] == "llmops.yaml" and f["line"] for f in findings)


def test_init_on_a_function_entry_is_an_error(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project({**GREETER, "flows/greet/flow.flex.yaml": "entry: greeter:hello\n",
                    "flows/greet/greeter.py": "def hello(name: str) -> str:\n    return name\n"}, base=False)
    result = cli("lint", "--format", "json")
    assert result.code == 1
    (hit,) = json.loads(result.out)["findings"]
    assert hit["rule"] == "flex-init-mismatch" and "takes no init arguments" in hit["message"]
    assert proj.read("llmops.yaml").splitlines()[hit["line"] - 1].strip() == "init:"


@pytest.mark.executor
def test_the_run_gets_the_init_arguments(cli: Cli, project: Callable[..., Project],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    proj = project(GREETER, base=False)
    monkeypatch.setenv("GREETING", "Hello")
    result = cli("batch-run")
    assert result.code == 0, result.err
    lines = [json.loads(x) for x in proj.read(".llmops/runs/greet/lines.jsonl").splitlines()]
    assert [line["outputs"] for line in lines] == [{"output": "Hello, Ada Hello, Ada"},
                                                  {"output": "Hello, Alan Hello, Alan"}]
    monkeypatch.delenv("GREETING")
    unset = cli("batch-run")
    assert unset.code == 2 and "GREETING is not set" in unset.err and "llmops.yaml:7" in unset.err
