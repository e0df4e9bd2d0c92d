"""``pr``: lint, batch-run, eval-run, gate and comment in one process."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from llmops_ci.core.errors import combined
from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import RUN_PROJECT, CliResult, Project

pytestmark = pytest.mark.executor

Cli = Callable[..., CliResult]


@pytest.mark.parametrize(("codes", "code"), [([0, 0, 0], 0), ([0, 1, 0], 1), ([1, 3], 3), ([3, 2], 2), ([], 0)])
def test_exit_codes_combine(codes: list[int], code: int) -> None:
    assert combined(codes) == code


def test_lint_errors_stop_the_runs_but_still_comment(cli: Cli, project: Callable[..., Project],
                                                     run_env: FakeOpenAI) -> None:
    proj = project(RUN_PROJECT, base=False)
    proj.replace("flows/echo/flow.dag.yaml", "text: ${inputs.text}", "text: ${inputs.txt}")
    result = cli("pr", "--flow", "echo")
    assert result.code == 1
    assert "lint failed: no flow was run" in result.err
    summary = json.loads(proj.read(".llmops/summary.json"))
    assert "flows" not in summary and summary["lint"]["findings"]
    assert "node-ref-unknown" in proj.read(".llmops/comment.md")
    # the terminal gets the report as plain text: no markdown escapes, no marker
    terminal = result.out[result.out.index("❌ llmops-ci"):]
    assert "${inputs.text}" in terminal and "\\" not in terminal and "<!--" not in terminal
    assert run_env.requests == []


def test_the_executor_started_before_lint_is_stopped_at_once_when_lint_stops_every_flow(
        cli: Cli, project: Callable[..., Project], run_env: FakeOpenAI) -> None:
    from pathlib import Path

    proj = project(RUN_PROJECT, base=False)
    proj.replace("flows/echo/flow.dag.yaml", "text: ${inputs.text}", "text: ${inputs.txt}")
    assert cli("pr", "--flow", "echo").code == 1
    assert proj.path(".llmops/logs/executor.log").is_file()  # it was started ahead, while lint ran
    state = str(proj.path(".llmops").absolute()).encode()
    left = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and state in (entry / "environ").read_bytes():
                left.append(entry.name)
        except OSError:
            continue
    assert not left and run_env.requests == []


def test_the_whole_check_in_one_go(cli: Cli, project: Callable[..., Project], run_env: FakeOpenAI) -> None:
    proj = project({**RUN_PROJECT, "llmops.yaml": RUN_PROJECT["llmops.yaml"].replace(
        "                  expected: ${data.expected}\n",
        "                  expected: ${data.expected}\n"
        "            gate:\n              match.match_rate: {min: 0.7}\n")},
        base=False)
    result = cli("pr", "--flow", "echo")
    assert result.code == 0, result.err
    flow = json.loads(proj.read(".llmops/summary.json"))["flows"]["echo"]
    assert flow["run"]["status"] == "completed" and flow["evaluations"]["match"]["metrics"] == {"match_rate": 0.75}
    assert flow["gate"]["passed"] is True
    assert "✅ llmops-ci: all checks passed" in result.out
    # #27: each thing printed once: the gate table is in the report at the end, not also in the gate's log
    both = result.out + result.err
    assert both.count("match.match_rate") == 1 and "echo: gate passed" in result.err
    # the evaluation calls no LLM: no cache line naming a cassette it never writes
    assert "echo.match.json" not in both
