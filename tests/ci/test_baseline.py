"""llmops_ci.ci baseline: only complete results (exit 0 or 1) become the baseline of later pull requests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from llmops_ci.ci import dispatch
from llmops_ci.ci.baseline import decide
from llmops_ci.platforms.azure_devops import AzureDevOpsHost

SUMMARY = {"schema": "llmops-ci/summary@1", "flows": {"classify": {"run": {"status": "completed"}}}}


def state_dir(tmp_path: Path, summary: object = SUMMARY) -> Path:
    state = tmp_path / "state"
    (state / "runs" / "classify").mkdir(parents=True)
    (state / "pf-home").mkdir()
    (state / "pf-home" / "pf.sqlite").write_text("connections")
    (state / "runs" / "classify" / "lines.jsonl").write_text("{}\n")
    (state / "summary.json").write_text(summary if isinstance(summary, str) else json.dumps(summary))
    return state


@pytest.mark.parametrize(("code", "kept"), [("0", True), ("1", True), ("2", False), ("3", False), ("4", False),
                                            ("130", False), ("143", False), ("-15", False), ("", False),
                                            ("$(LLMOPS_EXIT_CODE)", False)])  # the macro of a run that never set it
def test_decide_by_exit_code(tmp_path: Path, code: str, kept: bool) -> None:
    why_not = decide(code, state_dir(tmp_path) / "summary.json")
    assert (why_not is None) is kept, why_not


@pytest.mark.parametrize("summary", ["{not json", json.dumps([1, 2]), json.dumps({"schema": "other"})])
def test_an_unreadable_summary_is_not_kept(tmp_path: Path, summary: str) -> None:
    assert decide("0", state_dir(tmp_path, summary) / "summary.json")


def test_no_summary_is_not_kept(tmp_path: Path) -> None:
    assert decide("0", tmp_path / "summary.json") == "no summary.json in the state dir: no baseline saved"


def test_save_copies_summary_and_runs_only(tmp_path: Path) -> None:
    state, out_dir = state_dir(tmp_path), tmp_path / "baseline-out"
    (out_dir / "stale").mkdir(parents=True)
    environ = {"TF_BUILD": "True", "LLMOPS_EXIT_CODE": "1", "LLMOPS_STATE_DIR": str(state),
               "LLMOPS_BASELINE_OUT": str(out_dir)}
    out = io.StringIO()
    assert dispatch("baseline", environ, AzureDevOpsHost(environ, out)) == 0
    assert sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*")) == [
        "runs", "runs/classify", "runs/classify/lines.jsonl", "summary.json"]
    assert "##vso[task.setvariable variable=LLMOPS_BASELINE_READY]true" in out.getvalue()


def test_save_after_a_cancel_keeps_nothing(tmp_path: Path) -> None:
    out_dir = tmp_path / "baseline-out"
    environ = {"TF_BUILD": "True", "LLMOPS_EXIT_CODE": "143", "LLMOPS_STATE_DIR": str(state_dir(tmp_path)),
               "LLMOPS_BASELINE_OUT": str(out_dir)}
    out = io.StringIO()
    assert dispatch("baseline", environ, AzureDevOpsHost(environ, out)) == 0
    assert not out_dir.exists()
    assert "##vso[task.setvariable variable=LLMOPS_BASELINE_READY]false" in out.getvalue()
    assert "##vso[task.logissue type=warning]the llmops-ci run exited 143 (terminated)" in out.getvalue()


def test_save_needs_a_target(tmp_path: Path) -> None:
    environ = {"TF_BUILD": "True", "LLMOPS_EXIT_CODE": "0", "LLMOPS_STATE_DIR": str(state_dir(tmp_path))}
    out = io.StringIO()
    assert dispatch("baseline", environ, AzureDevOpsHost(environ, out)) == 2
    assert "LLMOPS_BASELINE_OUT" in out.getvalue()
