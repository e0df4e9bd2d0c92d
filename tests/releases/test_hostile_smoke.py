"""Smoke test files with bad expectations: exit 2 naming the file before anything is deployed."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

from llmops_ci.config import load_config
from llmops_ci.core.errors import UsageError
from llmops_ci.releases.spec import load_smoke_tests
from tests.conftest import CliResult, Project
from tests.helpers.config import Deploy
from tests.helpers.projects import BASE_CONFIG

ENV = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-smoke-" + "s" * 20}
DEPLOYED = BASE_CONFIG.with_flow("classify", deploy=Deploy("classify-ep", smoke_tests="smoke/*.json"))


def _project(project: Callable[..., Project], body: str) -> Project:
    return project({"smoke/a.json": body}, config=DEPLOYED)


def _load(proj: Project) -> list:
    config = load_config(proj.path("llmops.yaml"), ENV)
    return load_smoke_tests(config, config.flows["classify"])


def _wrap(**expect: object) -> str:
    return json.dumps({"request": {"text": "hi"}, "expect": expect})


@pytest.mark.parametrize(("body", "says"), [
    (_wrap(status="200"), "'status' must be an HTTP status code"),
    (_wrap(status=True), "'status' must be an HTTP status code"),
    (_wrap(status=99999), "'status' must be an HTTP status code"),
    (_wrap(regex="(unclosed"), "'regex' is not a valid regular expression"),
    (_wrap(regex=5), "'regex' must be a string"),
    (_wrap(contains=["a"]), "'contains' must be a string"),
    (_wrap(fields="answer"), "'fields' must be a list of output names"),
    (_wrap(fields=[1, 2]), "'fields' must be a list of output names"),
    (_wrap(statuss=200), "unknown expectation 'statuss'; did you mean 'status'?"),
    (json.dumps({"request": {"text": "hi"}, "expect": [200]}), "'expect' must be an object"),
    (json.dumps({"request": "hi"}), "'request' must be an object"),
    (json.dumps({"request": {}, "extra": 1}), "unknown key 'extra'"),
    ("[1, 2]", "a smoke test must be a JSON object"),
    ("{oops", "not a JSON smoke test"),
    ('{"n": ' + "1" * 5000 + "}", "not a JSON smoke test"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_bad_smoke_tests_name_the_file(project: Callable[..., Project], body: str, says: str) -> None:
    proj = _project(project, body)
    with pytest.raises(UsageError) as err:
        _load(proj)
    assert str(err.value).startswith("smoke/a.json: ") and says in str(err.value), str(err.value)


def test_good_smoke_tests_load(project: Callable[..., Project]) -> None:
    proj = _project(project, _wrap(status=201, fields=["category"], contains="App", regex=r"\w+"))
    (test,) = _load(proj)
    assert (test.status, test.fields, test.contains, test.regex) == (201, ("category",), "App", r"\w+")
    proj.write("smoke/a.json", '{"text": "a plain request body"}')
    assert _load(proj)[0].request == {"text": "a plain request body"}


def test_a_fifo_smoke_test_is_not_opened(project: Callable[..., Project]) -> None:
    proj = _project(project, "{}")
    os.mkfifo(proj.path("smoke/b.json"))
    with pytest.raises(UsageError) as err:
        _load(proj)
    assert "smoke/b.json: not a regular file" in str(err.value)


def test_deploy_exits_2_without_a_traceback(project: Callable[..., Project], cli: Callable[..., CliResult],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    _project(project, _wrap(regex="[z-a]"))
    result = cli("deploy", "--dry-run", "--config", "llmops.yaml")
    assert result.code == 2 and "smoke/a.json" in result.err and "Traceback" not in result.err
