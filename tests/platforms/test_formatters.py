"""Each platform's log formatter, its escaping and its mask command; detection (``--platform auto``)."""

from __future__ import annotations

import io
import logging

import pytest

from llmops_ci.core import log
from llmops_ci.platforms import PLATFORMS, detect
from llmops_ci.platforms.azure_devops import AzureDevOpsFormatter
from llmops_ci.platforms.github import GitHubFormatter
from llmops_ci.platforms.local import LocalFormatter


def emit(formatter: logging.Formatter, level: int, msg: str) -> str:
    stream = io.StringIO()
    logger = log.setup(formatter, stream, verbose=True)
    logger.log(level, msg)
    return stream.getvalue()


def test_github_commands_are_escaped() -> None:
    out = emit(GitHubFormatter(), logging.ERROR, "bad 100%\n::set-output name=x::y")
    assert out == "::error::bad 100%25%0A::set-output name=x::y\n"
    assert emit(GitHubFormatter(), logging.INFO, "fine\n::stop-commands::t") == "fine\n:\u200b:stop-commands::t\n"


def test_azure_commands_are_escaped() -> None:
    out = emit(AzureDevOpsFormatter(), logging.WARNING, "x\n##vso[task.setvariable variable=a]1")
    assert out.startswith("##vso[task.logissue type=warning]x%0A##vso%5Btask")
    assert "##vso[" not in emit(AzureDevOpsFormatter(), logging.INFO, "##vso[task.complete]")


def test_secrets_are_masked_everywhere() -> None:
    log.register_secret("s3cr3t-value")
    for fmt in (LocalFormatter(), GitHubFormatter(), AzureDevOpsFormatter()):
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
