"""Normalise the page text that came with the data line before it goes into the prompt."""

import html
import re
import unicodedata

from promptflow.core import tool

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


@tool
def clean_text(text: str, max_chars: int = 2000) -> str:
    """Strip markup, collapse all whitespace (newlines too) to single spaces, and cut to ``max_chars``.

    Collapsing newlines also means a page cannot smuggle a ``# system:`` role marker into the
    prompt: prompt flow only treats such a marker as a role when it stands on its own line.
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", html.unescape(str(text)))
    text = _TAG.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    max_chars = max(int(max_chars), 0)
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    # Prefer to end on a word boundary when one is reasonably close.
    space = cut.rfind(" ")
    if space >= max_chars * 0.8:
        cut = cut[:space]
    return cut.rstrip() + " ..."
