"""Prompty 2.x files run line by line on a thread pool, over real HTTP to the fake OpenAI server on 127.0.0.1."""

from __future__ import annotations

import json
import textwrap
import threading
from pathlib import Path

import pytest

from llmops_ci.core.errors import UsageError
from llmops_ci.engines.prompty.runner import COMPLETED, FAILED, Connection, run_lines
from tests.fakes.openai import FakeOpenAI

KEY_CONNECTION = """\
    kind: key
    endpoint: ${env:OPENAI_BASE_URL}
    apiKey: ${env:OPENAI_API_KEY}
"""


def prompty_file(folder: Path, connection: str = KEY_CONNECTION, provider: str = "openai", extra: str = "") -> Path:
    path = folder / "summarize.prompty"
    path.write_text(textwrap.dedent("""\
        ---
        name: summarize
        model:
          id: gpt-4o-mini
          provider: {provider}
          connection:
        {connection}
          options:
            temperature: 0.2
        inputs:
          - name: text
            kind: string
          - name: style
            kind: string
            default: short
        {extra}
        ---
        system:
        Summarize in a {{{{style}}}} way.

        user:
        {{{{text}}}}
        """).format(provider=provider, connection=textwrap.indent(textwrap.dedent(connection), "    "),
                    extra=extra), encoding="utf-8")
    return path


@pytest.fixture
def env(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    return fake_openai


def test_lines_run_with_outputs_tokens_latency_and_errors(env: FakeOpenAI, tmp_path: Path) -> None:
    rows = [{"text": f"line {i}"} for i in range(5)] + [{"text": "FAIL please", "style": "long"}]
    run = run_lines(prompty_file(tmp_path), rows, workers=3)
    assert [line.line for line in run.lines] == list(range(6))
    assert [line.status for line in run.lines] == [COMPLETED] * 5 + [FAILED]
    assert run.lines[2].outputs == {"output": "ECHO: line 2"}
    assert run.lines[2].inputs == {"text": "line 2"}
    assert run.lines[2].tokens == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert all(line.duration_s is not None and line.duration_s >= 0 for line in run.lines)
    failed = run.lines[5]
    assert failed.error_code == "BadRequestError" and "fake failure" in (failed.error or "")
    assert run.lines_failed == 1 and run.tokens["total_tokens"] == 50
    bodies = [r["body"] for r in env.requests]
    assert {b["model"] for b in bodies} == {"gpt-4o-mini"} and {b["temperature"] for b in bodies} == {0.2}
    assert "Summarize in a long way." in [m["content"] for b in bodies for m in b["messages"]]
    assert all(r["authorization"] for r in env.requests)


def test_lines_are_in_flight_together(env: FakeOpenAI, tmp_path: Path) -> None:
    """Four requests must be at the server at once to pass the barrier; a serial runner would time out."""
    barrier = threading.Barrier(4, timeout=20)

    def answer(prompt: str) -> str:
        barrier.wait()
        return "ok"

    env.answer = answer
    run = run_lines(prompty_file(tmp_path), [{"text": str(i)} for i in range(8)], workers=4, max_retries=0)
    assert [line.status for line in run.lines] == [COMPLETED] * 8, [line.error for line in run.lines]


def test_reference_connection_comes_from_llmops_yaml(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    path = prompty_file(tmp_path, connection="kind: reference\nname: openai\n")
    conn = Connection("openai", "open_ai", {"base_url": fake_openai.url + "/v1", "api_key": "k"})
    run = run_lines(path, [{"text": "hi"}], connections=[conn])
    assert run.lines[0].outputs == {"output": "ECHO: hi"}
    with pytest.raises(UsageError, match="'openai', which is not declared"):
        run_lines(path, [{"text": "hi"}])


def test_azure_reference_connection(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    path = prompty_file(tmp_path, connection="kind: reference\nname: aoai\n", provider="azure")
    conn = Connection("aoai", "azure_open_ai",
                      {"api_base": fake_openai.url, "api_key": "k", "api_version": "2024-06-01"})
    run = run_lines(path, [{"text": "hi"}], connections=[conn])
    assert run.lines[0].status == COMPLETED, run.lines[0].error
    assert fake_openai.requests[-1]["path"].startswith("/openai/deployments/gpt-4o-mini/chat/completions")


def test_structured_outputs_are_parsed(env: FakeOpenAI, tmp_path: Path) -> None:
    env.answer = lambda prompt: json.dumps({"category": "Movie", "evidence": "trailer"})
    extra = "outputs:\n  - name: category\n    kind: string\n  - name: evidence\n    kind: string"
    run = run_lines(prompty_file(tmp_path, extra=extra), [{"text": "Watch the trailer"}])
    assert run.lines[0].outputs == {"category": "Movie", "evidence": "trailer"}


def test_unset_environment_variable_is_bad_input(fake_openai: FakeOpenAI, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    with pytest.raises(UsageError, match=r"summarize.prompty: .*OPENAI_BASE_URL"):
        run_lines(prompty_file(tmp_path), [{"text": "hi"}])


def test_old_format_file_is_bad_input(env: FakeOpenAI, tmp_path: Path) -> None:
    path = tmp_path / "old.prompty"
    path.write_text("---\nmodel:\n  api: chat\ninputs:\n  text:\n    type: string\n---\nuser:\n{{text}}\n")
    with pytest.raises(UsageError, match=r"old\.prompty: the prompty package cannot load this file"):
        run_lines(path, [{"text": "hi"}])


def test_no_api_key_anywhere_fails_each_line(fake_openai: FakeOpenAI, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("PROMPTY_TRUSTED_ENDPOINTS", fake_openai.url)
    path = prompty_file(tmp_path, connection=f"kind: key\nendpoint: {fake_openai.url}/v1\n")
    run = run_lines(path, [{"text": "a"}, {"text": "b"}])
    assert [line.status for line in run.lines] == [FAILED, FAILED]
    assert all("api_key" in (line.error or "") for line in run.lines)
