"""Turn the model's reply into {"category": ..., "evidence": ...}, whatever shape it came in."""

import json
import re

from promptflow.core import tool

CATEGORIES = ("App", "Channel", "Movie", "Academic", "Profile", "PDF", "None")
EVIDENCE = ("Url", "Text content", "Both")
_FALLBACK = {"category": "None", "evidence": "None"}
_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


def _canonical(value: object, allowed: tuple) -> str:
    text = str(value or "").strip().strip("\"'.").lower()
    for choice in allowed:
        if text == choice.lower():
            return choice
    return "None"


@tool
def convert_to_dict(input_str: str) -> dict:
    """Parse the JSON answer; tolerate ```json fences, chatter around the object and odd casing."""
    text = (input_str or "").strip()
    candidates = [text] + _OBJECT.findall(text)
    for candidate in candidates:
        try:
            parsed = json.loads(candidate)
        except (TypeError, ValueError):
            continue
        if isinstance(parsed, dict) and "category" in parsed:
            return {
                "category": _canonical(parsed.get("category"), CATEGORIES),
                "evidence": _canonical(parsed.get("evidence"), EVIDENCE),
            }
    print(f"convert_to_dict: no JSON object with a 'category' in the model reply ({len(text)} chars)")
    return dict(_FALLBACK)
