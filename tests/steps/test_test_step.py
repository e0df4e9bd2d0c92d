"""``llmops-ci test``: required inputs said up front; committed cassettes are written only when asked."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import BASE_PROJECT, CliResult, Project

Cli = Callable[..., CliResult]


def test_inputs_without_default_are_required_up_front(cli: Cli, project: Callable[..., Project],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    proj = project()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-" + "k" * 24)
    result = cli("test", "--flow", "classify")
    assert result.code == 2
    assert "flow 'classify' needs a value for each input without a default: --input text=..." in result.err
    assert not proj.path(".llmops/pf-home").exists()  # said before any executor started


@pytest.mark.executor
def test_auto_cache_never_edits_the_cassette_unless_record_is_asked(cli: Cli, project: Callable[..., Project],
                                                                    run_env: FakeOpenAI) -> None:
    config = BASE_PROJECT["llmops.yaml"].replace("version: 1\n", "version: 1\n        llm_cache: {mode: auto}\n", 1)
    proj = project({"llmops.yaml": config})
    cassette = proj.path("cassettes/classify.json")
    first = cli("test", "--flow", "classify", "--input", "text=hello")
    assert first.code == 0, first.err
    assert not cassette.exists()
    assert "not recorded" in first.err and "--llm-cache record" in first.err
    calls = len(run_env.requests)
    recorded = cli("test", "--flow", "classify", "--input", "text=hello", "--llm-cache", "record")
    assert recorded.code == 0, recorded.err
    assert cassette.is_file() and "recording this line's LLM calls" in recorded.err
    # tokens are the line's, counted by the proxy; no column of '-' per node (prompt flow counts none there)
    assert "tokens: " in recorded.out and "(the line's LLM calls, as the proxy counted them)" in recorded.out
    assert "tokens" not in recorded.out.split("node")[1].splitlines()[0]
    before = cassette.read_bytes()
    replayed = cli("test", "--flow", "classify", "--input", "text=hello")
    assert replayed.code == 0
    assert replayed.out.split("node")[0] == recorded.out.split("node")[0] == '{\n  "category": "None"\n}\n'
    assert "tokens: " in replayed.out  # a replayed line's recorded tokens
    assert cassette.read_bytes() == before
    assert len(run_env.requests) == calls + 1  # the replayed line reached no server
