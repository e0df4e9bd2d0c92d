"""Classify a web page into App, Channel, Movie, Academic, Profile, PDF or None.

The three DAG nodes of the web-classification sample become three steps of one function: clean the
text (was clean_text.py), ask the model through classify.prompty (was the LLM node and its Jinja2
template), read its JSON answer (was convert_to_dict.py).
"""

import html
import json
import re
import unicodedata
from pathlib import Path
from typing import TypedDict

from promptflow.core import Prompty
from promptflow.tracing import trace

HERE = Path(__file__).parent
CATEGORIES = ("App", "Channel", "Movie", "Academic", "Profile", "PDF", "None")
EVIDENCE = ("Url", "Text content", "Both")
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


class Result(TypedDict):
    category: str
    evidence: str


def clean_text(text: str, max_chars: int = 2000) -> str:
    """Strip markup and collapse whitespace (a page cannot smuggle a role marker onto its own line)."""
    text = unicodedata.normalize("NFKC", html.unescape(str(text or "")))
    text = _SPACE.sub(" ", _TAG.sub(" ", text)).strip()
    return text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0] + " ..."


def _canonical(value: object, allowed: tuple) -> str:
    text = str(value or "").strip().strip("\"'.").lower()
    return next((choice for choice in allowed if text == choice.lower()), "None")


def to_result(reply: str) -> Result:
    """The model's JSON answer, tolerating fences and chatter around it; None/None when there is none."""
    text = (reply or "").strip()
    for candidate in [text, *_OBJECT.findall(text)]:
        try:
            parsed = json.loads(candidate)
        except (TypeError, ValueError):
            continue
        if isinstance(parsed, dict) and "category" in parsed:
            return Result(category=_canonical(parsed.get("category"), CATEGORIES),
                          evidence=_canonical(parsed.get("evidence"), EVIDENCE))
    return Result(category="None", evidence="None")


@trace
def classify(url: str, text: str = "") -> Result:
    prompty = Prompty.load(source=HERE / "classify.prompty")
    reply = prompty(url=url, text_content=clean_text(text))
    return to_result(reply if isinstance(reply, str) else json.dumps(reply))
