"""The example project is what users copy: it must lint clean, and its defects must be caught."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.lint.project import LintRequest, lint
from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import EXAMPLE, CliResult, classify_by_url, processes_using, snapshot

pytestmark = pytest.mark.executor


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


def test_example_runs_end_to_end_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         cli: Callable[..., CliResult]) -> None:
    """The README's main path: lint, batch-run, eval-run, gate, comment from the shipped cassettes, no key."""
    server = FakeOpenAI(answer=classify_by_url).start()
    try:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")  # reachable, yet it must not be called
        monkeypatch.chdir(EXAMPLE.parent.parent)
        state = str(tmp_path / "state")
        config = str(EXAMPLE / "llmops.yaml")
        before = snapshot(EXAMPLE)
        for step in ("lint", "batch-run", "eval-run"):
            result = cli(step, "--config", config, "--flow", "classify", "--state-dir", state)
            assert result.code == 0, (step, result.err)
        flow = json.loads((tmp_path / "state" / "summary.json").read_text())["flows"]["classify"]
        assert flow["run"]["lines_total"] == 42 and flow["run"]["lines_failed"] == 0
        assert flow["run"]["tokens"]["total"] > 0
        assert flow["run"]["llm_cache"]["hits"] == 42 and flow["run"]["llm_cache"]["misses"] == 0
        assert flow["evaluations"]["accuracy"]["metrics"]["accuracy"] == pytest.approx(41 / 42, abs=1e-4)
        assert server.requests == []
        # the same cassettes replayed again as the baseline (another run, the same answers): every rule passes, the
        # paired comparison says unchanged
        base = str(tmp_path / "base")
        for step in ("batch-run", "eval-run"):
            assert cli(step, "--config", config, "--flow", "classify", "--state-dir", base).code == 0
        gate = cli("gate", "--config", config, "--flow", "classify", "--state-dir", state, "--baseline", base)
        assert gate.code == 0, gate.err
        checks = json.loads((tmp_path / "state" / "summary.json").read_text())["flows"]["classify"]["gate"]["checks"]
        drop = next(c for c in checks if c["rule"] == "max_drop")
        # 0/1 scores: McNemar's test and Newcombe's paired interval, which is not [0, 0] with no line flipping
        assert (drop["verdict"], drop["delta"], drop["interval"], drop["lines"], drop["method"]) == \
            ("unchanged", 0.0, [-0.079808, 0.079808], 42, "mcnemar")
        comment = cli("comment", "--config", config, "--state-dir", state)
        assert "✅ llmops-ci: all checks passed" in comment.out and "LLM cache: 42 hits, 0 misses" in comment.out
        assert snapshot(EXAMPLE) == before
        assert processes_using(tmp_path) == []
    finally:
        server.stop()
