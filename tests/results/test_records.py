"""Typed run records: status words parsed once where they come in, records that name their flow and evaluation."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import pytest

from llmops_ci.engines.artifacts import read_run
from llmops_ci.results.records import (
    LineResult,
    LineStatus,
    RunRecord,
    RunStatus,
    cache_settings,
    line_status,
    run_status,
)
from llmops_ci.results.store import load_run, run_dir, save_run
from llmops_ci.runs.azureml_service import line_result


def test_prompt_flow_words_pass_through_and_any_other_is_failed(caplog: pytest.LogCaptureFixture) -> None:
    # promptflow.contracts.run_info.Status: every word a line can end with is kept as it came
    for word in ("Completed", "Failed", "Canceled", "Bypassed", "NotStarted", "Running", "Preparing",
                 "CancelRequested"):
        assert line_status(word, "prompt flow") == word
    assert set(get_args(LineStatus)) >= set(get_args(RunStatus))
    for word in ("Completed", "Failed", "Canceled"):
        assert run_status(word, "Azure ML") == word
    with caplog.at_level(logging.WARNING):
        assert line_status("completed", "MLflow") == "Failed"  # a word in the wrong case is not prompt flow's
        assert line_status(None, "the evaluator") == "Failed"
        assert run_status("Paused", "Azure ML") == "Failed"
    assert "MLflow gave a line the status 'completed'" in caplog.text
    assert "Azure ML reported the run as 'Paused'" in caplog.text


def test_an_unknown_line_status_from_azure_ml_is_a_failed_line() -> None:
    lines = [line_result({"index": 0, "status": "Completed", "output": {"a": 1}}),
             line_result({"index": 1, "status": "Finalizing"}),
             line_result({"index": 2, "status": "Bypassed"})]
    assert [line.status for line in lines] == ["Completed", "Failed", "Bypassed"]
    record = RunRecord("qa", "qa_1", run_status("Completed", "Azure ML"), lines, 1.0)
    assert record.lines_failed == 2 and record.summary(1)["status"] == "failed"


def test_an_unknown_line_status_in_prompt_flow_artifacts_is_a_failed_line(tmp_path: Path) -> None:
    folder = tmp_path / "flow_artifacts"
    folder.mkdir()
    (folder / "000000000_000000001.jsonl").write_text(
        '{"line_number": 0, "run_info": {"status": "Completed", "output": {"a": 1}}}\n'
        '{"line_number": 1, "run_info": {"status": "Exploded"}}\n', encoding="utf-8")
    assert [line.status for line in read_run(tmp_path).lines] == ["Completed", "Failed"]


def _line(n: int) -> LineResult:
    return LineResult(n, "Completed", {}, {"score": 1}, 0.1, {})


def test_an_evaluation_record_names_its_flow_and_evaluation(tmp_path: Path) -> None:
    batch = RunRecord("qa", "qa_1", "Completed", [_line(0)], 1.0)
    scored = RunRecord("qa", "qa_acc_1", "Completed", [_line(0)], 1.0, evaluation="acc")
    assert (batch.label, scored.label) == ("qa", "qa/acc")
    save_run(tmp_path, batch, None)
    save_run(tmp_path, scored, None)
    # the state dir's layout is the one every reader knows
    assert run_dir(tmp_path, "qa") == tmp_path / "runs" / "qa"
    assert run_dir(tmp_path, "qa", "acc") == tmp_path / "runs" / "qa" / "evals" / "acc"
    assert (tmp_path / "runs" / "qa" / "run.json").is_file()
    assert (tmp_path / "runs" / "qa" / "evals" / "acc" / "lines.jsonl").is_file()
    loaded: dict[str, Any] | None = load_run(tmp_path, "qa", "acc")
    assert loaded is not None and loaded["name"] == "qa_acc_1"
    assert load_run(tmp_path, "qa")["name"] == "qa_1"  # type: ignore[index]


def test_cassettes_keep_their_names(tmp_path: Path) -> None:
    config: Any = SimpleNamespace(llm_cache=SimpleNamespace(mode="auto"), cassettes=tmp_path / "cassettes")
    batch, scored = cache_settings(config, "qa", None), cache_settings(config, "qa", None, evaluation="acc")
    assert batch is not None and scored is not None
    assert (batch.cassette.name, scored.cassette.name) == ("qa.json", "qa.acc.json")
    assert cache_settings(config, "qa", "off", evaluation="acc") is None
