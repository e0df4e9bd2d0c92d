"""Untrusted text (from flows, data sets and models) made inert for markdown, HTML and CI logs.

Error messages and outputs of a flow can contain anything a data line or a model produced. In
the PR comment such text must not open HTML or markdown structures, forge our hidden marker or
mention people; in a log line it must not be read as a workflow command.
"""

from __future__ import annotations

import re

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")
_MENTION = re.compile(r"@(?=[A-Za-z0-9])")
_COMMAND_LINE = re.compile(r"^(\s*)(::|##\[|##vso\[)", re.MULTILINE)


def md(text: object, limit: int = 500) -> str:
    """One line of inert markdown: HTML-escaped, markdown punctuation escaped, mentions broken."""
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    flat = _MD_SPECIAL.sub(r"\\\1", flat)
    return _MENTION.sub("@&#8203;", flat)


def code(text: object, limit: int = 200) -> str:
    """Inline code for identifiers (paths, rule ids); backticks and newlines cannot escape it."""
    flat = " ".join(str(text).split()).replace("`", "'")
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return f"`{flat}`" if flat else ""


def log_safe(text: object) -> str:
    """Text for a plain log line: no line may start a GitHub (``::``) or Azure (``##[``/``##vso[``) command.

    A zero-width space breaks the command token (runners may strip leading blanks, so indenting is not
    enough); ``##vso[`` is read anywhere in a line by the Azure agent, so it is broken everywhere.
    """
    broken = _COMMAND_LINE.sub(lambda m: m.group(1) + m.group(2)[0] + "\u200b" + m.group(2)[1:], str(text))
    return broken.replace("##vso[", "#\u200b#vso[")
