"""The first hour of a newcomer, end to end (#27): the README's example `pr` in a fresh copy, offline; then
`init` in a folder of upstream prompt flow examples, lint, a batch run against the fake OpenAI-compatible server
and the gate, all as the README and `init` say."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import CliResult, processes_using

pytestmark = pytest.mark.executor

ROOT = Path(__file__).parent.parent
UPSTREAM = ROOT / "tests" / "kinds" / "data" / "upstream"
Cli = Callable[..., CliResult]


def test_readme_example_pr_in_a_fresh_copy_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = re.search(r"python -m llmops_ci pr --config (\S+)", readme)
    assert command is not None, "the README shows the example's pr"
    example = Path(command.group(1)).parent
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / example, clone / example)  # what a fresh clone holds of the example
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)  # no key, no endpoint: the cassettes answer
    monkeypatch.chdir(clone)
    before = {p: p.read_bytes() for p in (clone / example).rglob("*") if p.is_file()}
    result = cli("pr", "--config", command.group(1))
    assert result.code == 0, result.out + result.err
    assert "✅ llmops-ci: all checks passed" in result.out
    # the report's tables are headed and said once; the comment is written where the README says
    assert result.out.count("\nGate\n") == 1 and (result.out + result.err).count("accuracy.accuracy   0.9762") <= 2
    assert (clone / ".llmops" / "comment.md").is_file() and (clone / ".llmops" / "summary.json").is_file()
    # the example's own files (its cassettes above all) are as they were: nothing recorded, nothing appended
    assert {p: p.read_bytes() for p in before} == before
    assert not list((clone / ".llmops").rglob("keyring_pass.cfg")) and not (clone / ".llmops" / "pf-home").exists()


def test_init_lint_batch_run_and_gate_on_upstream_flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        cli: Cli) -> None:
    project = tmp_path / "mine"
    for name in ("basic", "chat-basic", "eval-chat-math"):
        shutil.copytree(UPSTREAM / name, project / "flows" / name)
    server = FakeOpenAI().start()
    try:
        monkeypatch.chdir(project)
        init = cli("init")
        assert init.code == 0, init.err
        assert init.out.startswith("wrote llmops.yaml: 2 flows (dag); 1 evaluation flow to place")
        config = yaml.safe_load((project / "llmops.yaml").read_text())
        # the connection init declared, pointed at the fake server as a user points it at theirs
        (name, connection), = config["connections"].items()
        assert connection["type"] == "azure_open_ai"
        # the sample line init wrote for a flow without data runs: a list input gets a list, not ""
        assert json.loads((project / "data" / "chat-basic.jsonl").read_text())["chat_history"] == []
        monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.url)
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", "newcomer-" + "n" * 24)
        # upstream `basic` calls Azure OpenAI from its own Python tool, with its own variable for the endpoint
        monkeypatch.setenv("AZURE_OPENAI_API_BASE", server.url)

        lint = cli("lint")
        assert lint.code == 0, lint.out + lint.err
        assert "(2 flows checked)" in lint.out

        run = cli("batch-run", "--llm-cache", "record")
        assert run.code == 0, run.out + run.err
        summary = json.loads((project / ".llmops" / "summary.json").read_text())
        for flow in ("basic", "chat-basic"):
            entry = summary["flows"][flow]["run"]
            lines = (project / ".llmops" / "runs" / flow / "lines.jsonl").read_text().splitlines()
            assert entry["status"] == "completed" and entry["lines_failed"] == 0
            assert entry["lines_total"] == len(lines) > 0  # counts equal the records
        assert server.requests, "the flows called the endpoint init configured"
        assert "recorded" in run.err and (project / "cassettes").is_dir()  # said, and written only when asked

        gate = cli("gate")
        assert gate.code == 0, gate.err
        assert "basic: gate passed (no baseline)" in gate.err and "chat-basic: gate passed" in gate.err
    finally:
        server.stop()
    assert processes_using(tmp_path) == []
