"""No secret reaches any byte we print or any file we write, in any process; CI tokens never reach flow code."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from llmops_ci.core import redaction
from llmops_ci.core.log import SafeStream
from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import CliResult, Project

Cli = Callable[..., CliResult]

LEAKY = {
    "llmops.yaml": """\
        version: 1
        connections:
          openai:
            type: open_ai
            base_url: ${env:OPENAI_BASE_URL}
            api_key: ${env:OPENAI_API_KEY}
          internal:
            type: custom
            secrets:
              token: ${env:INTERNAL_SERVICE}
        llm_cache:
          mode: record
        flows:
          leak:
            path: flows/leak
            data: data/leak.jsonl
            column_mapping:
              text: ${data.text}
            max_failed_lines: 1
          chat:
            path: flows/chat
            data: data/chat.jsonl
            connections:
              answer: {connection: openai, model: gpt-test}
        """,
    "flows/leak/flow.dag.yaml": """\
        inputs:
          text:
            type: string
        outputs:
          seen:
            type: string
            reference: ${leak.output}
        nodes:
        - name: leak
          type: python
          source:
            type: code
            path: leak.py
          inputs:
            text: ${inputs.text}
            conn: openai
            internal: internal
        """,
    "flows/leak/leak.py": """\
        import os

        from promptflow.connections import CustomConnection, OpenAIConnection
        from promptflow.core import tool


        @tool
        def leak(text: str, conn: OpenAIConnection, internal: CustomConnection) -> str:
            if text == "raise":
                raise RuntimeError("401 Client Error for url https://api.example.test/v1?api_key=" + conn.api_key
                                   + " with token " + internal.secrets["token"])
            ci = sorted(k for k in ("GITHUB_TOKEN", "SYSTEM_ACCESSTOKEN", "ACTIONS_RUNTIME_TOKEN") if k in os.environ)
            return "ci tokens seen: " + (",".join(ci) or "none") + "; key " + conn.api_key + "; env " + repr(
                dict(os.environ))
        """,
    "data/leak.jsonl": '{"text": "dump"}\n{"text": "raise"}\n',
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
            path: chat.jinja2
          inputs:
            question: ${inputs.question}
          connection: openai
          api: chat
        """,
    "flows/chat/chat.jinja2": "user:\n{{question}}\n",
    "data/chat.jsonl": '{"question": "What header did I send?"}\n',
}


class EchoAuth(FakeOpenAI):
    """A model that repeats the request's Authorization header in its answer."""

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        header = handler.headers.get("Authorization") or ""
        self.answer = lambda prompt: f"you sent {header}"  # type: ignore[method-assign]
        super().handle(handler)


def _every_file(root: Path) -> list[Path]:
    skip = {"flows", "data"}
    return [p for p in root.rglob("*") if p.is_file() and not (set(p.relative_to(root).parts) & skip)]


@pytest.mark.executor
def test_no_secret_in_any_output_or_file(cli: Cli, project: Callable[..., Project],
                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    server = EchoAuth().start()
    try:
        proj = project(LEAKY, base=False)
        values = {
            "OPENAI_API_KEY": "sk-test-" + secrets.token_hex(16),
            "INTERNAL_SERVICE": "int-" + secrets.token_hex(12),  # only llmops.yaml says it is a secret
            "GITHUB_TOKEN": "ghs_" + secrets.token_hex(18),
            "SYSTEM_ACCESSTOKEN": secrets.token_hex(26),
            "ACTIONS_RUNTIME_TOKEN": "rt-" + secrets.token_hex(20),
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
        summary_md, outputs = tmp_path / "step-summary.md", tmp_path / "outputs.txt"
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_md))
        monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
        result = cli("pr", "--platform", "github", "--comment", "off", "--workers", "1")
        assert result.code == 0, result.err
        lines = [json.loads(x) for x in proj.read(".llmops/runs/leak/lines.jsonl").splitlines()]
        assert lines[0]["outputs"]["seen"].startswith("ci tokens seen: none;")  # flow code gets no CI token
        assert "401 Client Error" in lines[1]["error"]  # the error is kept, its secrets are not
        # a new process knows no registered secret: it derives the same ones from its environment
        env = {**os.environ, "GITHUB_ACTIONS": "", "TF_BUILD": ""}
        comment = subprocess.run([sys.executable, "-m", "llmops_ci", "comment", "--platform", "local"],
                                 cwd=proj.root, env=env, capture_output=True, text=True, timeout=120)
        assert comment.returncode == 0, comment.stderr
        printed = "\n".join(line for line in (result.out + result.err + comment.stdout + comment.stderr).splitlines()
                            if not line.startswith("::add-mask::"))  # the one place a secret goes: the runner's mask
        files = [*_every_file(proj.root), summary_md, outputs]
        assert (proj.root / "cassettes").is_dir() or any("cassette" in str(p) for p in files)
        for name, value in values.items():
            assert value not in printed, f"{name} printed"
            for path in files:
                assert value.encode() not in path.read_bytes(), f"{name} in {path.relative_to(tmp_path)}"
        assert "you sent Bearer ***" in json.dumps([json.loads(p.read_text()) for p in files
                                                    if p.suffix == ".json" and "cassette" in str(p)])
    finally:
        server.stop()


def test_safe_stream_redacts_and_neutralises_but_commands_pass() -> None:
    class Sink:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> int:
            self.text += text
            return len(text)

    sink = Sink()
    stream = SafeStream(sink)  # type: ignore[arg-type]
    redaction.add("hunter2-secret")
    stream.write('{"out": "hunter2-secret"}\n::error::forged\n  ##vso[task.complete result=Failed]x\n')
    assert "hunter2-secret" not in sink.text and "::error::forged" not in sink.text
    assert "##vso[" not in sink.text
    stream.command("::add-mask::hunter2-secret\n", secret=True)
    stream.command("::error file=a.py::bad hunter2-secret\n")
    assert sink.text.endswith("::add-mask::hunter2-secret\n::error file=a.py::bad ***\n")


@pytest.mark.parametrize("text", [
    "Authorization: Bearer abcdefghijklmnopqrstuvwxyz",
    "https://x.test/v1?api_key=abcdefgh12345&x=1",
    "sk-proj-" + "a" * 30,
    "ghp_" + "b" * 36,
    "AccountKey=" + "c" * 40,
    "https://acct.blob.core.windows.net/c?sv=1&sig=" + "d" * 30,
])
def test_credential_formats_are_redacted_unseen(text: str) -> None:
    out = redaction.redact(text)
    assert "***" in out and len(out) < len(text)


def test_working_directories_are_not_secrets() -> None:
    assert not redaction.is_secret_name("PWD") and not redaction.is_secret_name("OLDPWD")
    assert redaction.is_secret_name("DB_PWD") and redaction.is_secret_name("PASSWORD")


def test_secret_names_from_environment_and_config(project: Callable[..., Project], cli: Cli,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    project(LEAKY, base=False)
    monkeypatch.setenv("INTERNAL_SERVICE", "zz-internal-value-1")
    monkeypatch.setenv("PLAIN_SETTING", "not-a-secret-value")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-" + "q" * 24)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    cli("eval-run")  # loads the project: every secret the config reads is known from here on
    assert redaction.redact("zz-internal-value-1 not-a-secret-value") == "*** not-a-secret-value"


def test_literal_secrets_in_the_config_are_never_repeated(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project()
    proj.replace("llmops.yaml", "api_key: ${env:OPENAI_API_KEY}", "api_key: literal-key-0123456789")
    proj.replace("llmops.yaml", "flows:\n  classify:\n", "flows:\n  classify:\n    register:\n      name: m\n"
                 "      tags: {service_token: tag-token-987654}\n")
    lint = cli("lint")
    assert lint.code == 1 and "secret-literal" in lint.out
    dry = cli("register", "--force", "--dry-run")
    printed = lint.out + lint.err + dry.out + dry.err
    assert dry.code == 0, dry.err
    assert "literal-key-0123456789" not in printed and "tag-token-987654" not in printed
    assert all(b"literal-key-0123456789" not in p.read_bytes() for p in (proj.root / ".llmops").rglob("*")
               if p.is_file())


def test_deploy_dry_run_prints_references_not_secrets(cli: Cli, project: Callable[..., Project],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    proj = project()
    proj.replace("llmops.yaml", "flows:\n  classify:\n", "flows:\n  classify:\n    deploy:\n      endpoint: cls-ep\n"
                 "      environment_variables: {SERVICE_URL: '${env:SERVICE_URL}'}\n")
    monkeypatch.setenv("SERVICE_URL", "https://user:pw-0123456789@internal.example.test/")
    for backend in ("local", "azureml"):
        result = cli("deploy", "--dry-run", "--backend", backend)
        assert result.code == 0, result.err
        assert "pw-0123456789" not in result.out + result.err
        assert "${env:SERVICE_URL}" in result.out
