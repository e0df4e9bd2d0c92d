"""Without Agent Framework where the runner can import it, a run stops with exit 2 and the install command."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable

import pytest

from llmops_ci.engines.agent_framework.engine import AGENTS_PATH
from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import CliResult, Project

FILES = {
    "llmops.yaml": """\
        version: 1
        flows:
          agent:
            path: agent.yaml
            data: data.jsonl
            column_mapping:
              input: ${data.text}
        """,
    "agent.yaml": """\
        kind: Prompt
        name: A
        instructions: Answer.
        model: {id: gpt-4o-mini, provider: OpenAI}
        """,
    "data.jsonl": json.dumps({"text": "hello"}) + "\n",
}


@pytest.mark.skipif(importlib.util.find_spec("agent_framework") is not None,
                    reason="Agent Framework is importable in this environment")
def test_missing_framework_is_exit_2_with_the_install_command(project: Callable[..., Project],
                                                              cli: Callable[..., CliResult], run_env: FakeOpenAI,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AGENTS_PATH, raising=False)
    project(FILES, base=False)
    result = cli("batch-run", "--state-dir", "state")
    assert result.code == 2, result.err
    assert "pip install --target" in result.err and AGENTS_PATH in result.err
    assert run_env.requests == []
