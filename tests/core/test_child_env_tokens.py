"""No process that runs flow code gets a CI credential; ``${env:...}`` of one is a lint error at its line."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.core.child_env import child_environment, scrubbed_os_environ, warn_if_held
from tests.helpers.config import Config, Flow, Register, openai_connection
from tests.helpers.projects import CliResult, Project

Cli = Callable[..., CliResult]

CI = {  # what GitHub Actions and Azure Pipelines put into a job's environment
    "GITHUB_TOKEN": "ghs_" + secrets.token_hex(18),
    "GH_TOKEN": "gho_" + secrets.token_hex(18),
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "eyJ" + secrets.token_hex(20),
    "ACTIONS_ID_TOKEN_REQUEST_URL": "https://pipelines.actions.example.test/" + secrets.token_hex(8),
    "ACTIONS_RUNTIME_TOKEN": "rt-" + secrets.token_hex(20),
    "ACTIONS_CACHE_URL": "https://artifactcache.example.test/" + secrets.token_hex(8),
    "ACTIONS_RESULTS_URL": "https://results.example.test/" + secrets.token_hex(8),
    "SYSTEM_ACCESSTOKEN": secrets.token_hex(26),
    "SYSTEM_OIDCREQUESTURI": "https://dev.azure.example.test/oidc/" + secrets.token_hex(8),
}
ECHO = """\
import os

NAMES = {names!r}
VALUES = {values!r}


def echo(text: str) -> str:
    seen = sorted(n for n in NAMES if n in os.environ)
    seen += sorted(k for k, v in os.environ.items() if v in VALUES.values())
    return "seen:" + ",".join(seen)
"""


def _echo_code() -> str:
    return ECHO.format(names=sorted(CI), values=CI)


def test_child_environment_drops_ci_credentials_and_their_values() -> None:
    base = {**CI, "OPENAI_API_KEY": "sk-live-" + "k" * 24, "DATABRICKS_TOKEN": "dapi" + "0" * 32,
            "DATABRICKS_HOST": "https://adb.example.test", "PATH": "/usr/bin", "ACTIONS_STEP_DEBUG": "true"}
    env = child_environment(base, {"FWD": CI["GITHUB_TOKEN"], "WRAPPED": "Bearer " + CI["SYSTEM_ACCESSTOKEN"],
                                   "MODE": "fast"})
    assert not set(env) & set(CI) and "ACTIONS_STEP_DEBUG" not in env
    assert "FWD" not in env and "WRAPPED" not in env  # a credential under another name is still a credential
    assert env["OPENAI_API_KEY"] == base["OPENAI_API_KEY"] and env["DATABRICKS_TOKEN"] == base["DATABRICKS_TOKEN"]
    assert env["MODE"] == "fast" and env["PATH"] == "/usr/bin"


def test_scrubbed_os_environ_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", CI["GITHUB_TOKEN"])
    monkeypatch.setenv("KEEP_ME", "1")
    with scrubbed_os_environ({"ADDED": "x"}):
        assert "GITHUB_TOKEN" not in os.environ and os.environ["ADDED"] == "x" and os.environ["KEEP_ME"] == "1"
    assert os.environ["GITHUB_TOKEN"] == CI["GITHUB_TOKEN"] and "ADDED" not in os.environ


# every place a flow can name an environment variable, each naming a CI credential (the line numbers matter)
REFS_CONFIG = Config(connections={"openai": openai_connection()}, flows={
    "greet": Flow("flows/greet", data="data/names.jsonl", environment_variables={"FWD": "${env:GITHUB_TOKEN}"},
                  init={"greeting": "${env:ACTIONS_ID_TOKEN_REQUEST_TOKEN}"}),
    "other": Flow(run_file="runs/other.run.yml"),
    "summarize": Flow("flows/summarize.prompty", data="data/names.jsonl", column_mapping={"text": "${data.name}"}),
})
REFS = {
    **REFS_CONFIG.files(),
    "runs/other.run.yml": """\
        flow: ../flows/plain
        data: ../data/names.jsonl
        environment_variables:
          TOKEN_COPY: ${env:SYSTEM_ACCESSTOKEN}
        """,
    "flows/greet/flow.flex.yaml": """\
        entry: greeter:Greeter
        environment_variables:
          ALSO: ${env:GH_TOKEN}
        """,
    "flows/greet/greeter.py": """\
        class Greeter:
            def __init__(self, greeting: str) -> None:
                self.greeting = greeting

            def __call__(self, name: str) -> str:
                return f"{self.greeting}, {name}"
        """,
    "flows/plain/flow.flex.yaml": "entry: plain:plain\n",
    "flows/plain/plain.py": "def plain(name: str) -> str:\n    return name\n",
    "flows/summarize.prompty": """\
        ---
        name: summarize
        model:
          id: gpt-4o-mini
          provider: openai
          connection:
            kind: key
            endpoint: http://127.0.0.1:9/v1
            apiKey: ${env:GITHUB_TOKEN}
        inputs:
          - name: text
            kind: string
        ---
        user:
        {{text}}
        """,
    "data/names.jsonl": '{"name": "Ada"}\n',
}


def test_ci_credential_refs_are_lint_errors_at_their_line(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project(REFS, base=False)
    result = cli("lint", "--format", "json")
    assert result.code == 1
    hits = [f for f in json.loads(result.out)["findings"] if f["rule"] == "ci-token-ref"]
    where = sorted((f["path"], f["line"]) for f in hits)
    assert where == [("flows/greet/flow.flex.yaml", 3), ("flows/summarize.prompty", 9), ("llmops.yaml", 12),
                     ("llmops.yaml", 14), ("runs/other.run.yml", 4)]
    for f in hits:
        line = proj.read(f["path"]).splitlines()[f["line"] - 1]
        assert "${env:" in line and f["message"].split("}")[0].split(":")[1] in line
        assert not any(value in f["message"] for value in CI.values())


def test_a_run_never_resolves_a_ci_credential(cli: Cli, project: Callable[..., Project],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    project(REFS, base=False, config=REFS_CONFIG.without_flow("other").without_flow("summarize"))
    for name, value in CI.items():
        monkeypatch.setenv(name, value)
    result = cli("batch-run", "--flow", "greet")
    assert result.code == 2, result.err
    assert "llmops.yaml:12" in result.err and "credential of the CI system" in result.err
    assert not any(value in result.out + result.err for value in CI.values())


FLEX_ECHO = {
    **Config(flows={"echo": Flow("flows/echo", data="data/names.jsonl", environment_variables={"MODE": "fast"})}
             ).files(),
    "flows/echo/flow.flex.yaml": "entry: echo:echo\n",
    "data/names.jsonl": '{"text": "Ada"}\n{"text": "Alan"}\n',
}


@pytest.mark.executor
def test_flex_flow_code_sees_no_ci_credential(cli: Cli, project: Callable[..., Project],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    proj = project({**FLEX_ECHO, "flows/echo/echo.py": _echo_code()}, base=False)
    for name, value in CI.items():
        monkeypatch.setenv(name, value)
    result = cli("batch-run")
    assert result.code == 0, result.err
    lines = [json.loads(x) for x in proj.read(".llmops/runs/echo/lines.jsonl").splitlines()]
    assert [line["outputs"]["output"] for line in lines] == ["seen:", "seen:"]
    test = cli("test", "--flow", "echo", "--input", "text=x")
    assert test.code == 0, test.err
    assert "seen:" in test.out and "GITHUB_TOKEN" not in test.out


AGENT_ECHO = '''\
import os
import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

NAMES = {names!r}
VALUES = {values!r}


class Echo(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        seen = sorted(n for n in NAMES if n in os.environ)
        seen += sorted(k for k, v in os.environ.items() if v in VALUES.values())
        return ResponsesAgentResponse(output=[self.create_text_output_item("seen:" + ",".join(seen), "id-1")])


mlflow.models.set_model(Echo())
'''


@pytest.mark.executor
def test_mlflow_agent_sees_no_ci_credential(cli: Cli, project: Callable[..., Project],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason="needs the [mlflow] extra")
    agent = Flow("agents/support", data="data/support.jsonl", register=Register("support"), mlflow_agent={
        "code": "agent.py", "interface": "responses", "pip_requirements": ["mlflow-skinny==3.17.2"]})
    proj = project(config=Config(flows={"support": agent}), files={
        "agents/support/agent.py": AGENT_ECHO.format(names=sorted(CI), values=CI),
        "data/support.jsonl": '{"input": "hello"}\n',
    }, base=False)
    for name, value in CI.items():
        monkeypatch.setenv(name, value)
    result = cli("batch-run")
    assert result.code == 0, result.err
    (line,) = [json.loads(x) for x in proj.read(".llmops/runs/support/lines.jsonl").splitlines()]
    assert line["outputs"]["output_text"] == "seen:", line


@pytest.mark.executor
def test_a_prompty_file_cannot_send_the_ci_token_to_its_own_endpoint(cli: Cli, project: Callable[..., Project],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes.openai import FakeOpenAI

    thief = FakeOpenAI().start()  # "an endpoint of its own choosing"
    try:
        prompty = REFS["flows/summarize.prompty"].replace("http://127.0.0.1:9/v1", thief.url + "/v1")
        project({"flows/summarize.prompty": prompty, "data/names.jsonl": REFS["data/names.jsonl"]}, base=False,
                config=Config(flows={"summarize": REFS_CONFIG.flows["summarize"]}))
        for name, value in CI.items():
            monkeypatch.setenv(name, value)
        for step in (("batch-run",), ("batch-run", "--llm-cache", "record"),
                     ("test", "--flow", "summarize", "--input", "text=x")):
            result = cli(*step)
            assert result.code == 2, (step, result.err)
            assert "GITHUB_TOKEN" in result.err and CI["GITHUB_TOKEN"] not in result.err
        assert thief.requests == []
    finally:
        thief.stop()


def test_the_prompty_loader_refuses_a_ci_token_even_without_lint(project: Callable[..., Project],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    from llmops_ci.core.errors import UsageError
    from llmops_ci.engines.prompty.engine import PromptyLocal

    proj = project({"flows/summarize.prompty": REFS["flows/summarize.prompty"]}, base=False)
    monkeypatch.setenv("GITHUB_TOKEN", CI["GITHUB_TOKEN"])
    with pytest.raises(UsageError, match="credential of the CI system"):
        PromptyLocal(tmp_path / "state")._agent(proj.path("flows/summarize.prompty"), None, (), {}, 5,  # type: ignore[arg-type]
                                                lenient=True)


def test_a_step_that_runs_flows_with_the_token_is_warned(caplog: pytest.LogCaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    monkeypatch.setattr("llmops_ci.core.child_env._warned", set())
    logging.getLogger("llmops_ci").propagate = True
    with caplog.at_level(logging.WARNING, logger="llmops_ci"):
        warn_if_held({"GITHUB_TOKEN": CI["GITHUB_TOKEN"], "ACTIONS_STEP_DEBUG": "true"})  # a laptop: quiet
        assert caplog.text == ""
        warn_if_held({"GITHUB_ACTIONS": "true", "GITHUB_TOKEN": CI["GITHUB_TOKEN"], "ACTIONS_STEP_DEBUG": "true",
                      "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "x" * 20})
    assert "ACTIONS_ID_TOKEN_REQUEST_TOKEN, GITHUB_TOKEN is in the environment" in caplog.text
    assert "ACTIONS_STEP_DEBUG" not in caplog.text and CI["GITHUB_TOKEN"] not in caplog.text


def test_a_program_using_an_engine_alone_still_scrubs_ci_tokens() -> None:
    """The CI credential names come from the platform modules; an engine used without the CLI must know them too."""
    code = ("from llmops_ci.engines.base import Backend\n"
            "from llmops_ci.core.child_env import child_environment\n"
            "env = child_environment({'GITHUB_TOKEN': 'ghs_secretvalue123', 'SYSTEM_ACCESSTOKEN': 'x' * 20,"
            " 'HOME': '/h'})\n"
            "print(sorted(env))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['HOME']"


def _with_ci(environ: dict[str, str]) -> dict[str, str]:
    drop = ("GITHUB_ACTIONS", "TF_BUILD", "LLMOPS_CI_EARLY_EXECUTOR", "LLMOPS_CI_KEEP_EXECUTOR")
    return {**{k: v for k, v in environ.items() if k not in drop}, **CI}


@pytest.mark.executor
def test_the_executor_started_ahead_gets_no_ci_credential(project: Callable[..., Project]) -> None:
    """``python -m llmops_ci`` starts prompt flow's executor before it has imported the rest of llmops-ci (the
    platforms that name the CI credentials among it): that executor must be as clean as one started later."""
    proj = project({**FLEX_ECHO, "flows/echo/echo.py": _echo_code()}, base=False)
    done = subprocess.run([sys.executable, "-m", "llmops_ci", "batch-run", "-v"], cwd=proj.root, capture_output=True,
                          text=True, timeout=300, env=_with_ci(dict(os.environ)))
    assert done.returncode == 0, done.stderr
    assert "the prompt flow executor started ahead" in done.stderr and "is taken over" in done.stderr
    lines = [json.loads(x) for x in proj.read(".llmops/runs/echo/lines.jsonl").splitlines()]
    assert [line["outputs"]["output"] for line in lines] == ["seen:", "seen:"]


PEEK = """\
import os

VALUES = {values!r}


def peek(text: str) -> dict:
    return {{"seen": float(sum(v in VALUES.values() for v in os.environ.values()))}}
"""


@pytest.mark.executor
def test_an_evaluator_sees_no_ci_credential(cli: Cli, project: Callable[..., Project],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """An evaluator's (or scorer's, or Agent Framework flow's) runner is started by ``run_child``: it cleans the
    environment whatever the engine handed it."""
    proj = project({**FLEX_ECHO, "flows/echo/echo.py": _echo_code(), "evals/peek.py": PEEK.format(values=CI),
                    "evals/__init__.py": ""}, base=False)
    proj.replace("llmops.yaml", "      MODE: fast\n", "      MODE: fast\n    evaluations:\n      peek:\n"
                 "        evaluator: evals.peek:peek\n        column_mapping: {text: '${data.text}'}\n")
    for name, value in CI.items():
        monkeypatch.setenv(name, value)
    result = cli("pr", "--platform", "local")
    assert result.code == 0, result.err
    lines = [json.loads(x) for x in proj.read(".llmops/runs/echo/evals/peek/lines.jsonl").splitlines()]
    assert [line["outputs"] for line in lines] == [{"seen": 0.0}, {"seen": 0.0}]


def test_without_the_platforms_a_child_environment_is_refused() -> None:
    """Fail closed: before any platform named its credentials there is nothing to drop, so nothing is handed on."""
    code = ("from llmops_ci.core.child_env import child_environment\n"
            "try:\n    child_environment({'GITHUB_TOKEN': 'ghs_secretvalue123'})\n"
            "except RuntimeError as exc:\n    print('refused:', exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("refused:") and "import llmops_ci.platforms" in out
