"""Text from flows, data and models cannot open markup, forge our marker, mention people or run commands."""

from __future__ import annotations

import io
import logging
import re

import pytest

from llmops_ci import log
from llmops_ci.report import MARKER
from llmops_ci.safe_text import code, log_safe, md


@pytest.mark.parametrize("attack", [
    "<details open><summary>x</summary>",
    "<img src=x onerror=alert(1)>",
    MARKER,
    "</td></tr></table><script>alert(1)</script>",
])
def test_html_cannot_open(attack: str) -> None:
    out = md(attack)
    assert "<" not in out and ">" not in out


def test_marker_cannot_be_forged() -> None:
    assert MARKER not in md("before " + MARKER + " after")


@pytest.mark.parametrize(("attack", "bad"), [
    ("**bold** _it_ [link](https://evil) ![img](x)", ["**", "](", "!["]),
    ("| a | b |\n|---|---|", ["\n"]),
    ("# heading\n> quote\n```code```", ["\n", "```"]),
])
def test_markdown_structures_are_escaped(attack: str, bad: list[str]) -> None:
    out = md(attack)
    assert re.search(r"(?<!\\)\|", out) is None  # a table cell cannot be closed
    for fragment in bad:
        assert fragment not in out


@pytest.mark.parametrize("text", ["cc @octocat", "@org/team please", "ping@user"])
def test_mentions_are_broken(text: str) -> None:
    out = md(text)
    assert "@octocat" not in out and "@org" not in out
    assert "@&#8203;" in out or "ping@user" not in text


def test_code_spans_cannot_be_closed() -> None:
    assert code("a`b\nc") == "`a'b c`"


@pytest.mark.parametrize("attack", ["::set-output name=x::y", "  ::add-mask::k", "##vso[task.complete result=Failed]",
                                    "##[error]fake", "x\n::error::injected"])
def test_log_lines_cannot_start_commands(attack: str) -> None:
    for line in log_safe(attack).splitlines():
        assert not line.lstrip().startswith(("::", "##[", "##vso["))
    assert "##vso[" not in log_safe(attack)


def test_error_annotations_keep_untrusted_text_on_one_line() -> None:
    stream = io.StringIO()
    log.setup(log.GitHubFormatter(), stream).error("line 3: %s", "model said\n::error::pwned")
    assert stream.getvalue().count("\n") == 1 and "%0A::error::pwned" in stream.getvalue()
    stream = io.StringIO()
    log.setup(log.AzureDevOpsFormatter(), stream).log(logging.INFO, "data: %s", "x\n##[error]fake\n##vso[a]b")
    assert all(not line.startswith("##") for line in stream.getvalue().splitlines())
