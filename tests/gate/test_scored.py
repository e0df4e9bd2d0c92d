"""The lines an evaluation scored wrong, kept for the comment (#27)."""

from __future__ import annotations

import json
from pathlib import Path

from llmops_ci.gate.scored import LIMIT, scored_wrong
from llmops_ci.results.records import LineResult


def line(n: int, inputs: dict, outputs: object) -> LineResult:
    return LineResult(n, "Completed", inputs, outputs, 0.01, {})


def test_zero_scores_are_wrong_with_the_flow_input_beside_them(tmp_path: Path) -> None:
    runs = tmp_path / "runs" / "classify"
    runs.mkdir(parents=True)
    (runs / "lines.jsonl").write_text("\n".join(json.dumps({"line": i, "inputs": {"url": f"https://x/{i}"}})
                                                for i in range(3)) + "\n")
    lines = [line(0, {"groundtruth": "App", "prediction": "App"}, {"correct": 1.0}),
             line(1, {"groundtruth": "Movie", "prediction": "None"}, {"correct": 0.0}),
             line(2, {"groundtruth": "PDF", "prediction": "PDF"}, {"correct": True})]
    out = scored_wrong(tmp_path, "classify", lines, {"accuracy": "correct"})
    assert out == {"scored": 3, "wrong": 1, "first": [{
        "line_number": 2, "input": "url: https://x/1", "evaluated": "groundtruth: Movie, prediction: None",
        "score": "correct: 0.0"}]}


def test_graded_scores_have_no_wrong_lines_and_only_the_first_are_kept(tmp_path: Path) -> None:
    graded = [line(i, {}, {"similarity": 3}) for i in range(4)]
    assert scored_wrong(tmp_path, "f", graded, {"similarity": "similarity"}) is None
    many = [line(i, {"text": "y" * 500}, {"ok": 0}) for i in range(LIMIT + 5)]
    out = scored_wrong(tmp_path, "f", many, {"acc": "ok"})  # no batch run lines: the input is left empty
    assert out is not None and out["wrong"] == LIMIT + 5 and len(out["first"]) == LIMIT
    assert len(out["first"][0]["evaluated"]) <= 200 and out["first"][0]["input"] == ""


def test_lines_that_changed_verdict_are_paired_by_key(tmp_path: Path) -> None:
    from llmops_ci.gate.scored import changed_lines

    runs = tmp_path / "runs" / "qa"
    runs.mkdir(parents=True)
    (runs / "lines.jsonl").write_text("\n".join(json.dumps({"line": i, "inputs": {"q": f"q{i}"}}) for i in range(3)))
    current = {0: 1.0, 1: 0.0, 2: 1.0}
    keys = {0: "a", 1: "b", 2: "c"}
    out = changed_lines(tmp_path, "qa", current, {"a": 1.0, "b": 1.0, "z": 0.0}, keys, "id")
    assert out == {"paired": 2, "changed": 1, "first": [{"line_number": 2, "input": "q: q1", "was": 1.0, "now": 0.0}]}
    assert changed_lines(tmp_path, "qa", current, {"0": 0.0, "1": 0.0}, keys, "line")["changed"] == 1  # by position
    assert changed_lines(tmp_path, "qa", current, {}, keys, "id") is None
