from __future__ import annotations

import io
import logging

import pytest

from llmops_ci.core import log
from llmops_ci.platforms import PLATFORMS, detect


def emit(formatter: logging.Formatter, level: int, msg: str) -> str:
    stream = io.StringIO()
    logger = log.setup(formatter, stream, verbose=True)
    logger.log(level, msg)
    return stream.getvalue()


def test_github_commands_are_escaped() -> None:
    out = emit(log.GitHubFormatter(), logging.ERROR, "bad 100%\n::set-output name=x::y")
    assert out == "::error::bad 100%25%0A::set-output name=x::y\n"
    assert emit(log.GitHubFormatter(), logging.INFO, "fine\n::stop-commands::t") == "fine\n:\u200b:stop-commands::t\n"


def test_azure_commands_are_escaped() -> None:
    out = emit(log.AzureDevOpsFormatter(), logging.WARNING, "x\n##vso[task.setvariable variable=a]1")
    assert out.startswith("##vso[task.logissue type=warning]x%0A##vso%5Btask")
    assert "##vso[" not in emit(log.AzureDevOpsFormatter(), logging.INFO, "##vso[task.complete]")


def test_secrets_are_masked_everywhere() -> None:
    log.register_secret("s3cr3t-value")
    for fmt in (log.LocalFormatter(), log.GitHubFormatter(), log.AzureDevOpsFormatter()):
        out = emit(fmt, logging.ERROR, "key is s3cr3t-value")
        assert "s3cr3t-value" not in out and "***" in out


def test_mask_commands() -> None:
    out = io.StringIO()
    PLATFORMS["github"].mask("abc%def", out)
    PLATFORMS["azure-devops"].mask("abc", out)
    PLATFORMS["local"].mask("abc", out)
    assert out.getvalue() == "::add-mask::abc%25def\n##vso[task.setsecret]abc\n"


@pytest.mark.parametrize(("env", "name"), [
    ({"GITHUB_ACTIONS": "true"}, "github"),
    ({"TF_BUILD": "True"}, "azure-devops"),
    ({}, "local"),
])
def test_detect(env: dict[str, str], name: str) -> None:
    assert detect("auto", env).name == name
    assert detect("local", env).name == "local"


def test_cache_line_is_said_only_for_runs_that_called_an_llm() -> None:
    from types import SimpleNamespace

    # an evaluation of plain Python calls no LLM: no line naming a cassette that is never written (#27)
    assert log.cache_line("auto", SimpleNamespace(hits=0, misses=0, recorded=0, tokens_saved=0), "c.json") is None
    # every engine's line says tokens saved, even when its stats carry none
    line = log.cache_line("replay", SimpleNamespace(hits=3, misses=0, recorded=0), "c.json")
    assert line == "LLM cache (replay): 3 hits, 0 misses, 0 recorded, 0 tokens saved -> c.json"
