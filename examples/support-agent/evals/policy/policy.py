"""Grade one answer against the facts it must mention and the two-sentence limit; aggregate into the metrics."""

import re
from typing import TypedDict


class Grade(TypedDict):
    coverage: float  # share of the line's must_mention phrases the answer contains
    brief: float  # 1.0 when the answer has at most two sentences
    missing: list


class Policy:
    def __init__(self) -> None:  # prompt flow cannot read a class entry that inherits object.__init__
        pass

    def __call__(self, answer: str, must_mention: list) -> Grade:
        text = (answer or "").lower()
        missing = [phrase for phrase in must_mention or [] if str(phrase).lower() not in text]
        coverage = 1.0 - len(missing) / len(must_mention) if must_mention else 1.0
        sentences = [s for s in re.split(r"[.!?]+(?:\s|$)", answer or "") if s.strip()]
        return Grade(coverage=round(coverage, 4), brief=1.0 if len(sentences) <= 2 else 0.0, missing=missing)

    def __aggregate__(self, line_results: list) -> dict:
        total = len(line_results)
        if not total:
            return {"coverage": 0.0, "brief_rate": 0.0}
        return {"coverage": round(sum(r["coverage"] for r in line_results) / total, 4),
                "brief_rate": round(sum(r["brief"] for r in line_results) / total, 4)}
