"""Text from flows, data and models cannot open markup, forge our marker, mention people or run commands."""

from __future__ import annotations

import io
import logging
import re

import pytest

from llmops_ci.core import log
from llmops_ci.core.safe_text import code, log_safe, md
from llmops_ci.platforms.azure_devops import AzureDevOpsFormatter
from llmops_ci.platforms.github import GitHubFormatter
from llmops_ci.report.comment import MARKER


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
    log.setup(GitHubFormatter(), stream).error("line 3: %s", "model said\n::error::pwned")
    assert stream.getvalue().count("\n") == 1 and "%0A::error::pwned" in stream.getvalue()
    stream = io.StringIO()
    log.setup(AzureDevOpsFormatter(), stream).log(logging.INFO, "data: %s", "x\n##[error]fake\n##vso[a]b")
    assert all(not line.startswith("##") for line in stream.getvalue().splitlines())


# --- exact output: what a reader of the comment or the log sees ---------------------------------------

@pytest.mark.parametrize(("text", "shown"), [
    ("a\x1b[31mred", "a\u241b[31mred"),
    ("\x00\x08\x0b\x0c\r\x1f", "\u2400\u2408\u240b\u240c\u240d\u241f"),
    ("del\x7f", "del\u2421"),
    ("csi\x9b1m \x80 \x9f", "csi<U+009B>1m <U+0080> <U+009F>"),
    ("abc\u202edcb \u2066x\u2069 \u200e\u200f\u061c", "abc<U+202E>dcb <U+2066>x<U+2069> <U+200E><U+200F><U+061C>"),
    ("tab\tand\nnewline stay", "tab\tand\nnewline stay"),
    ("é ü – ✓", "é ü – ✓"),
])
def test_neutral_shows_controls_as_visible_symbols(text: str, shown: str) -> None:
    from llmops_ci.core.safe_text import neutral

    assert neutral(text) == shown


def test_neutral_takes_any_object() -> None:
    from llmops_ci.core.safe_text import neutral

    assert neutral(42) == "42"
    assert neutral(None) == "None"


@pytest.mark.parametrize(("text", "out"), [
    ("a < b > c & d", "a &lt; b &gt; c &amp; d"),
    ("&lt;", "&amp;lt;"),
    ("1.5 * (x_y) + [a] {b} #c !d |e ~f `g` \\h -i", r"1\.5 \* \(x\_y\) \+ \[a\] \{b\} \#c \!d \|e \~f \`g\` \\h \-i"),
    ("cc @octocat and @9 but not @ or a@", "cc @&#8203;octocat and @&#8203;9 but not @ or a@"),
    ("  many\n\n spaces\tand\nlines  ", "many spaces and lines"),
    (3, "3"),
])
def test_md_exact_text(text: object, out: str) -> None:
    assert md(text) == out


def test_md_truncates_to_the_limit_with_an_ellipsis() -> None:
    assert md("x" * 500) == "x" * 500
    assert md("x" * 501) == "x" * 499 + "…"
    assert md("abcdef", limit=4) == "abc…"
    assert md("abcd", limit=4) == "abcd"
    assert md("a <b>", limit=4) == "a &lt;…"  # cut before escaping: an entity is never cut in half


def test_code_exact_text_and_truncation() -> None:
    assert code("") == ""
    assert code("   \n ") == ""
    assert code("flows/a b.py") == "`flows/a b.py`"
    assert code("x" * 200) == "`" + "x" * 200 + "`"
    assert code("x" * 201) == "`" + "x" * 199 + "…`"
    assert code("abcdef", limit=3) == "`ab…`"
    assert code("a\x1bb") == "`a\u241bb`"


@pytest.mark.parametrize(("text", "out"), [
    ("::error::x", ":\u200b:error::x"),
    ("  ::warning::x", "  :\u200b:warning::x"),
    ("##[error]x", "#\u200b#[error]x"),
    ("ok\n##vso[task.setvariable]x", "ok\n#\u200b#vso[task.setvariable]x"),
    ("mid ##vso[a]b", "mid #\u200b#vso[a]b"),
    ("a :: b ## c", "a :: b ## c"),
])
def test_log_safe_exact_text(text: str, out: str) -> None:
    assert log_safe(text) == out
