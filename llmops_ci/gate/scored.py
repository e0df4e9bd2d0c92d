"""The lines an evaluation scored wrong, kept in ``summary.json`` for the comment: an accuracy of 0.9762 hides the
one misclassified line a reviewer wants to see.

A line is scored wrong when one of the evaluation's per-line scores (its ``scores:`` outputs) is 0 on a 0/1 scale;
graded scores (1 to 5, a similarity) have no "wrong" and are left out. Only the first ``LIMIT`` are kept, each text
cut short: the summary stays small and the comment within the platform's limit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmops_ci.results.records import LineResult
from llmops_ci.results.store import run_dir

LIMIT = 10
TEXT = 200


def _short(value: Any) -> str:
    if isinstance(value, dict):
        text = ", ".join(f"{k}: {v if isinstance(v, str) else json.dumps(v, default=str)}" for k, v in value.items())
    else:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= TEXT else text[:TEXT - 1] + "…"


def _base_inputs(state_dir: Path, flow: str) -> dict[int, Any]:
    """The flow's own inputs per line (prompt flow's 0-based ``line``), from its batch run's lines.jsonl."""
    path = run_dir(state_dir, flow) / "lines.jsonl"
    out: dict[int, Any] = {}
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError:
        return out
    for text in raw.splitlines():
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("line"), int) and "repeat" not in record:
            out[record["line"]] = record.get("inputs")
    return out


def scored_wrong(state_dir: Path, flow: str, lines: list[LineResult], scores: dict[str, str]) -> dict[str, Any] | None:
    """``{"scored": n, "wrong": k, "first": [{line_number, input, evaluated, score}]}``, or None when the evaluation
    has no 0/1 per-line score."""
    outputs = list(dict.fromkeys(scores.values()))
    scored, wrong = 0, []
    for line in lines:
        values = [line.outputs.get(o) for o in outputs] if isinstance(line.outputs, dict) else []
        numbers = [v for v in values if isinstance(v, (int, float))]
        if not numbers or any(v not in (0, 1) for v in numbers):
            continue
        scored += 1
        if any(v == 0 for v in numbers):
            wrong.append(line)
    if not scored:
        return None
    base = _base_inputs(state_dir, flow) if wrong else {}
    first = [{"line_number": line.line + 1, "input": _short(base.get(line.line, "")), "evaluated": _short(line.inputs),
              "score": _short({o: line.outputs.get(o) for o in outputs})} for line in wrong[:LIMIT]]
    return {"scored": scored, "wrong": len(wrong), "first": first}


def changed_lines(state_dir: Path, flow: str, current: dict[int, float], previous: dict[str, float],
                  keys: dict[int, str], kind: str) -> dict[str, Any] | None:
    """The lines whose score differs from the baseline's line it is paired with (``previous`` by pairing key;
    ``keys`` this run's line -> key, or by position when ``kind`` is "line"): ``{"paired": n, "changed": k,
    "first": [{line_number, input, was, now}]}``, or None when nothing was paired."""
    changed, paired = [], 0
    for line, now in sorted(current.items()):
        key = str(line) if kind == "line" else keys.get(line)
        if key is None or key not in previous:
            continue
        paired += 1
        if abs(previous[key] - now) > 1e-9:
            changed.append((line, previous[key], now))
    if not paired:
        return None
    base = _base_inputs(state_dir, flow) if changed else {}
    first = [{"line_number": line + 1, "input": _short(base.get(line, "")), "was": was, "now": now}
             for line, was, now in changed[:LIMIT]]
    return {"paired": paired, "changed": len(changed), "first": first}
