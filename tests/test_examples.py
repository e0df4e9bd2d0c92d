"""The example project is what users copy: it must lint clean, and its defects must be caught."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmops_ci.lint.project import LintRequest, lint

EXAMPLE = Path(__file__).parent.parent / "examples" / "web-classification"


def test_example_lints_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLE.parent.parent)
    report = lint(LintRequest(config=EXAMPLE / "llmops.yaml"))
    assert report.findings == []
    assert report.flows_checked == 2


def test_example_data_is_large_enough() -> None:
    lines = (EXAMPLE / "data" / "classify.jsonl").read_text(encoding="utf-8").splitlines()
    assert len([line for line in lines if line.strip()]) >= 30


def test_example_without_model_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "ex"
    shutil.copytree(EXAMPLE, copy)
    dag = copy / "flows" / "classify" / "flow.dag.yaml"
    dag.write_text(dag.read_text(encoding="utf-8").replace("            model: gpt-4o-mini\n", ""), encoding="utf-8")
    cfg = copy / "llmops.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("        model: gpt-4o-mini", ""), encoding="utf-8")
    monkeypatch.chdir(copy)
    rules = [(f.rule, f.path) for f in lint(LintRequest(config=cfg, flows=("classify",))).findings]
    assert rules == [("llm-model-missing", "llmops.yaml")]
