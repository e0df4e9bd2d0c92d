"""The web-classification-maf example: the DAG and its two Agent Framework migrations lint clean and go through
``pr`` offline from the shipped cassettes, with no key and the endpoint never called."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.engines.agent_framework.engine import AGENTS_PATH
from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import CliResult, classify_by_url, processes_using

EXAMPLES = Path(__file__).parents[2] / "examples"
EXAMPLE = EXAMPLES / "web-classification-maf"


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and "__pycache__" not in p.parts}


def test_example_lints_clean(cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(EXAMPLE)
    result = cli("lint", "--format", "json", "--state-dir", str(tmp_path / "state"))
    assert result.code == 0, result.out
    assert json.loads(result.out)["findings"] == []


@pytest.mark.executor
@pytest.mark.skipif(importlib.util.find_spec("agent_framework") is None and not os.environ.get(AGENTS_PATH),
                    reason=f"Agent Framework not installed (see docs/migrating-to-agent-framework.md, {AGENTS_PATH})")
def test_example_pr_runs_offline_from_its_cassettes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    cli: Callable[..., CliResult]) -> None:
    server = FakeOpenAI(answer=classify_by_url).start()
    try:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")  # reachable, yet it must not be called
        monkeypatch.chdir(EXAMPLES.parent)
        before = files(EXAMPLE)
        result = cli("pr", "--config", str(EXAMPLE / "llmops.yaml"), "--state-dir", str(tmp_path / "state"))
        assert result.code == 0, result.err
        flows = json.loads((tmp_path / "state" / "summary.json").read_text())["flows"]
        for name in ("classify-dag", "classify-agent", "classify-workflow"):
            run = flows[name]["run"]
            assert (run["lines_total"], run["lines_failed"]) == (42, 0), name
            assert run["llm_cache"]["hits"] == 42 and run["llm_cache"]["misses"] == 0 and run["tokens"]["total"] > 0
            assert flows[name]["evaluations"]["accuracy"]["metrics"]["accuracy"] == pytest.approx(41 / 42, abs=1e-4)
            assert flows[name]["gate"]["passed"] is True
        for name in ("classify-agent", "classify-workflow"):  # the migration gate: both agree with the DAG
            assert flows[name]["evaluations"]["parity"]["metrics"]["agreement"] == 1.0, name
        assert flows["classify-agent"]["evaluations"]["f1"]["metrics"]["f1_score"] == pytest.approx(41 / 42, 1e-4)
        against = next(c for c in flows["classify-agent"]["gate"]["checks"] if c["rule"] == "max_drop")
        assert (against["method"], against["passed"]) == ("mcnemar", True)  # non-inferiority shown, paired by line
        assert server.requests == []
        assert files(EXAMPLE) == before
        assert processes_using(tmp_path) == []
    finally:
        server.stop()
