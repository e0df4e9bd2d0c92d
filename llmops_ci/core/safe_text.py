"""Untrusted text (from flows, data sets and models) made inert for markdown, HTML and CI logs.

Error messages and outputs of a flow can contain anything a data line or a model produced. In
the PR comment such text must not open HTML or markdown structures, forge our hidden marker or
mention people; in a log line it must not be read as a workflow command.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline (ESC starts terminal sequences that recolour, hide or retitle), DEL, C1 controls
# (CSI U+009B is ESC [ on some terminals) and the bidirectional controls that make text read other than it is
# stored (U+202E "right-to-left override", Trojan Source)
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # the control picture: ␛ for ESC, ␍ for CR
    if code == 0x7F:
        return "\u2421"  # ␡
    return f"<U+{code:04X}>"


def neutral(text: object) -> str:
    """``text`` with every control character and bidi override shown as a visible symbol instead of acting."""
    return _CONTROLS.sub(_visible, str(text))


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")
_MENTION = re.compile(r"@(?=[A-Za-z0-9])")
_COMMAND_LINE = re.compile(r"^(\s*)(::|##\[|##vso\[)", re.MULTILINE)


def md(text: object, limit: int = 500) -> str:
    """One line of inert markdown: HTML-escaped, markdown punctuation escaped, mentions broken."""
    flat = " ".join(neutral(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    flat = _MD_SPECIAL.sub(r"\\\1", flat)
    return _MENTION.sub("@&#8203;", flat)


def code(text: object, limit: int = 200) -> str:
    """Inline code for identifiers (paths, rule ids); backticks and newlines cannot escape it."""
    flat = " ".join(neutral(text).split()).replace("`", "'")
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return f"`{flat}`" if flat else ""


def log_safe(text: object) -> str:
    """Text for a plain log line: no line may start a GitHub (``::``) or Azure (``##[``/``##vso[``) command.

    A zero-width space breaks the command token (runners may strip leading blanks, so indenting is not
    enough); ``##vso[`` is read anywhere in a line by the Azure agent, so it is broken everywhere.
    """
    broken = _COMMAND_LINE.sub(lambda m: m.group(1) + m.group(2)[0] + "\u200b" + m.group(2)[1:], neutral(text))
    return broken.replace("##vso[", "#\u200b#vso[")
