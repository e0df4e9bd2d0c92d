"""What a result is (#20 items 5-9, 11): counts equal records, nothing-ran is never green, results belong to one
run of one config, runs carry what they rest on, register takes only what the gate judged, lint stops only the
flows it concerns."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.config import FlowSpec
from llmops_ci.core.errors import UsageError
from llmops_ci.lint.blocks import lint_blocks
from llmops_ci.project.loaded import load_project
from llmops_ci.report.comment import current, outcome, render
from llmops_ci.results.provenance import flow_hash
from llmops_ci.results.records import RunRecord
from llmops_ci.results.state import SCHEMA
from llmops_ci.results.store import save_run
from llmops_ci.results.summary import FlowResult, Summary
from llmops_ci.steps import Context, Step, run_step
from llmops_ci.steps.register import unjudged
from llmops_ci.steps.settings import Settings
from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import RUN_PROJECT, CliResult, Project, processes_using

Cli = Callable[..., CliResult]
ROOT = Path(__file__).resolve().parents[2]

# RUN_PROJECT's echo flow with a gate and a register block; its tool fails the line "boom" and sleeps on "sleep"
GATED = RUN_PROJECT["llmops.yaml"].replace(
    "                  expected: ${data.expected}\n",
    "                  expected: ${data.expected}\n"
    "            gate:\n              match.match_rate: {min: 0.5}\n"
    "            register: {name: echo-model}\n")
SEVEN = "".join(json.dumps({"text": t, "expected": t.upper()}) + "\n" for t in ("a", "b", "boom", "d", "e", "f", "g"))


@pytest.fixture
def run_project(project: Callable[..., Project]) -> Callable[..., Project]:
    def make(extra: dict[str, str] | None = None) -> Project:
        return project({**RUN_PROJECT, "llmops.yaml": GATED, **(extra or {})}, base=False)
    return make


def summary(proj: Project) -> dict:
    return json.loads(proj.read(".llmops/summary.json"))


def records(proj: Project, rel: str) -> list[dict]:
    return [json.loads(x) for x in proj.read(rel).splitlines()]


# --- item 5: every count equals its records ---------------------------------------------------------------------

@pytest.mark.executor
def test_an_evaluation_over_a_run_with_a_failed_line_counts_the_lines_it_scored(
        cli: Cli, run_project: Callable[..., Project], run_env: FakeOpenAI) -> None:
    proj = run_project({"data/echo.jsonl": SEVEN})
    proj.replace("llmops.yaml", "    path: flows/echo\n", "    path: flows/echo\n    max_failed_lines: 1\n")
    assert cli("batch-run", "--flow", "echo").code == 0
    result = cli("eval-run", "--flow", "echo")
    assert result.code == 0, result.err
    evaluation = summary(proj)["flows"]["echo"]["evaluations"]["match"]
    scored = records(proj, ".llmops/runs/echo/evals/match/lines.jsonl")
    # prompt flow skips the line whose base line failed: 6 lines, as many as lines.jsonl holds
    assert len(scored) == 6 and evaluation["lines_total"] == 6 and evaluation["lines_failed"] == 0
    assert "6/6 lines ok" in result.err and "7/7" not in result.err
    assert "6 of 7 data lines evaluated" in result.err
    run = json.loads(proj.read(".llmops/runs/echo/evals/match/run.json"))
    assert run["lines_total"] == 6 and run["base_run"] == summary(proj)["flows"]["echo"]["run"]["name"]
    comment = cli("comment")
    assert "| `echo` | ✅ | 7 | 1 |" in comment.out.replace("  ", " ") or "echo" in comment.out


@pytest.mark.executor
def test_an_evaluation_whose_every_line_failed_fails(cli: Cli, run_project: Callable[..., Project],
                                                     run_env: FakeOpenAI) -> None:
    proj = run_project({"flows/match/match.py": "from promptflow.core import tool\n\n\n@tool\n"
                                                "def match(loud: str, expected: str) -> float:\n"
                                                "    raise ValueError('no score')\n"})
    assert cli("batch-run", "--flow", "echo").code == 0
    result = cli("eval-run", "--flow", "echo")
    assert result.code == 1
    assert "every evaluated line failed" in result.err
    evaluation = summary(proj)["flows"]["echo"]["evaluations"]["match"]
    assert evaluation["status"] == "failed" and evaluation["lines_failed"] == evaluation["lines_total"] == 4
    assert "evaluation echo/match failed" in cli("comment").out


# --- item 6: green without results, green after an error ----------------------------------------------------------

def test_comment_where_nothing_ran_is_not_green(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("comment")
    assert result.code == 2
    assert "nothing ran" in result.out and "all checks passed" not in result.out
    assert "nothing ran" in result.err


def test_comment_where_nothing_ran_tells_github_it_did_not_pass(cli: Cli, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    outputs, step_summary = tmp_path / "out.txt", tmp_path / "summary.md"
    for name, value in {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(outputs),
                        "GITHUB_STEP_SUMMARY": str(step_summary), "GITHUB_EVENT_NAME": "push"}.items():
        monkeypatch.setenv(name, value)
    result = cli("comment", "--platform", "github")
    assert result.code == 2
    assert "passed=false" in outputs.read_text() and "passed=true" not in outputs.read_text()
    assert "all checks passed" not in step_summary.read_text()


def test_pr_without_a_config_says_so_plainly(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("pr")
    assert result.code == 2
    assert "llmops.yaml: no such file" in result.err and "llmops-ci init" in result.err
    assert "fix the findings" not in result.err and "all checks passed" not in result.out + result.err


def test_a_step_that_stopped_on_bad_input_turns_the_report_red(cli: Cli, project: Callable[..., Project],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    project()  # BASE_PROJECT: its connection reads OPENAI_BASE_URL and OPENAI_API_KEY
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert cli("lint").code == 0
    stopped = cli("batch-run")
    assert stopped.code == 2 and "OPENAI_BASE_URL is not set" in stopped.err
    comment = cli("comment")
    assert "❌ llmops-ci: batch-run stopped (exit 2)" in comment.out and "all checks passed" not in comment.out
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-" + "k" * 24)
    assert cli("batch-run", "--dry-run").code == 0  # a step that ran through clears the note
    assert "steps" not in json.loads(Path(".llmops/summary.json").read_text())


class _Missing(Step):
    name = "batch-run"
    help = ""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        return None

    def run(self, settings: Settings, ctx: Context) -> int:
        raise self.error


@pytest.mark.parametrize("error", [
    ModuleNotFoundError("No module named 'mlflow'", name="mlflow"),
    UsageError("support: MLflow could not load or run the agent: No module named 'mlflow'; run it with 'python "
               "<code file>' to see the full error"),
])
def test_a_missing_extra_names_the_extra_and_is_never_green(error: BaseException, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    from llmops_ci.core.http import Http
    from llmops_ci.platforms import PLATFORMS

    ctx = Context(platform=PLATFORMS["local"], environ={}, stdout=sys.stdout, stderr=sys.stderr,
                  state_dir=tmp_path / "state", http=Http())
    ctx.state_dir.mkdir()  # as the lint before it left it
    assert run_step(_Missing(error), Settings(), ctx) == 2
    assert 'pip install -e ".[mlflow]"' in caplog.text and "[mlflow] extra" in caplog.text
    data = json.loads((tmp_path / "state" / "summary.json").read_text())
    result = outcome(Summary.parse(data))
    assert not result.passed and "batch-run stopped (exit 2)" in result.headline


# --- item 7: a result belongs to one run of one config --------------------------------------------------------------

def _run(config: str, status: str = "completed") -> dict:
    return {"config": config, "run": {"name": "r", "status": status, "lines_total": 3, "lines_failed": 0}}


def test_flows_of_another_config_in_a_shared_state_dir_are_not_current(cli: Cli,
                                                                       project: Callable[..., Project]) -> None:
    proj = project()  # the DAG example's config is llmops.yaml; the flex example's sits beside it
    proj.write(".llmops/summary.json", json.dumps({"schema": SCHEMA, "flows": {
        "classify": _run("llmops.yaml"), "classify-run-file": _run("flex/llmops.yaml", "failed")}}))
    shown = cli("comment")
    assert "✅ llmops-ci: all checks passed" in shown.out  # the other config's failed run is not this one's
    runs = shown.out[shown.out.index("Runs"):shown.out.index("Not shown")]
    assert "classify-run-file" not in runs
    assert "Not shown: results of other configs in this state dir" in shown.out
    assert "classify-run-file (flex/llmops.yaml)" in shown.out
    data = current(Summary.parse(json.loads(proj.read(".llmops/summary.json"))), "flex/llmops.yaml")
    assert list(data.flows) == ["classify-run-file"] and not outcome(data).passed


def test_an_unfinished_run_never_passes() -> None:
    data = {"schema": SCHEMA, "flows": {"classify": _run("llmops.yaml", "incomplete")}}
    result = outcome(Summary.parse(data))
    assert not result.passed and result.failed == ["run of classify never finished"]
    assert "never finished" in render(Summary.parse(data))


@pytest.mark.executor
def test_a_batch_run_killed_mid_way_is_never_shown_as_the_good_run_before_it(
        cli: Cli, run_project: Callable[..., Project], run_env: FakeOpenAI, clean_env: dict[str, str]) -> None:
    proj = run_project()
    good = cli("pr", "--flow", "echo")
    assert good.code == 0, good.err
    assert "✅ llmops-ci: all checks passed" in good.out
    proj.write("data/echo.jsonl", '{"text": "sleep", "expected": "X"}\n' * 4)
    env = {**clean_env, "PYTHONPATH": str(ROOT), "OPENAI_BASE_URL": run_env.url + "/v1",
           "OPENAI_API_KEY": "sk-test-" + "k" * 24}
    child = subprocess.Popen([sys.executable, "-m", "llmops_ci", "batch-run", "--flow", "echo"], cwd=proj.root,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while summary(proj)["flows"]["echo"]["run"]["status"] != "incomplete":
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.2)
        time.sleep(1.0)  # lines are in flight
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the runner and all it started in its group, with no cleanup
        child.wait()
    deadline = time.monotonic() + 30  # workers of their own session see their runner gone and end
    while processes_using(proj.root) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_using(proj.root) == []
    flow = summary(proj)["flows"]["echo"]
    assert flow["run"]["status"] == "incomplete" and "finished" not in flow["run"]
    assert flow["run"]["flow_hash"] and flow["run"]["data_hash"] and flow["run"]["started"]
    assert "evaluations" not in flow and "gate" not in flow  # they judged the run before
    comment = cli("comment")
    assert "❌ llmops-ci: run of echo never finished" in comment.out and "all checks passed" not in comment.out
    evaluated = cli("eval-run", "--flow", "echo")
    assert evaluated.code == 2 and "never finished" in evaluated.err
    assert cli("gate", "--flow", "echo").code == 1


@pytest.mark.executor
def test_pr_for_one_flow_shows_no_older_results_of_others(cli: Cli, run_project: Callable[..., Project],
                                                          run_env: FakeOpenAI) -> None:
    proj = run_project()
    assert cli("batch-run", "--flow", "chat").code == 0
    result = cli("pr", "--flow", "echo")
    assert result.code == 0, result.err
    assert "chat" not in proj.read(".llmops/comment.md")
    assert list(summary(proj)["flows"]) == ["echo"]
    run = summary(proj)["flows"]["echo"]["run"]
    assert {"flow_hash", "data_hash", "started", "finished"} <= set(run)
    assert summary(proj)["flows"]["echo"]["config"] == "llmops.yaml"
    assert summary(proj)["flows"]["echo"]["evaluations"]["match"]["flow_hash"]


# --- item 8: data changed between batch-run and eval-run -----------------------------------------------------------

@pytest.mark.executor
def test_eval_run_on_data_changed_since_the_run_stops_naming_the_file(cli: Cli, run_project: Callable[..., Project],
                                                                      run_env: FakeOpenAI) -> None:
    proj = run_project()
    assert cli("batch-run", "--flow", "echo").code == 0
    proj.write("data/echo.jsonl", "".join(proj.read("data/echo.jsonl").splitlines(keepends=True)[1:]))
    result = cli("eval-run", "--flow", "echo")
    assert result.code == 2
    assert "data/echo.jsonl: changed since the batch run" in result.err and "batch-run --flow echo" in result.err
    assert "evaluations" not in summary(proj)["flows"]["echo"]


# --- item 9: register registers only what the gate saw -----------------------------------------------------------

@pytest.mark.executor
def test_register_refuses_a_dag_flow_edited_after_its_gate(cli: Cli, run_project: Callable[..., Project],
                                                           run_env: FakeOpenAI) -> None:
    proj = run_project()
    assert cli("pr", "--flow", "echo").code == 0
    gate = summary(proj)["flows"]["echo"]["gate"]
    assert gate["passed"] is True and gate["flow_hash"] == summary(proj)["flows"]["echo"]["run"]["flow_hash"]
    proj.replace("flows/echo/shout.py", "return text.upper()", "return text.lower()")
    refused = cli("register", "--flow", "echo")
    assert refused.code == 1 and "content changed since the run the gate judged" in refused.err
    assert "--force" in refused.err and not (proj.root / ".llmops" / "registry" / "echo-model").exists()
    shown = cli("comment").out
    assert "register of echo refused" in shown and "results of echo are for an earlier version of it" in shown
    assert "stale: the flow changed since this run" in shown
    proj.replace("flows/echo/shout.py", "return text.lower()", "return text.upper()")
    registered = cli("register", "--flow", "echo")
    assert registered.code == 0, registered.err
    entry = summary(proj)["flows"]["echo"]["register"]
    assert entry["run"] == summary(proj)["flows"]["echo"]["run"]["name"] and entry["gate"] == "passed"
    (version,) = (proj.root / ".llmops" / "registry" / "echo-model").iterdir()
    tags = json.loads((version / "model.json").read_text())["tags"]
    assert tags["llmops.run"] == entry["run"] and tags["llmops.gate"] == "passed"
    assert tags["llmops.flow_hash"] == gate["flow_hash"]


AGENT = {
    "llmops.yaml": """\
        version: 1
        flows:
          support:
            path: agents/support
            mlflow_agent:
              code: agent.py
              interface: responses
            data: data/support.jsonl
            register: {name: support-agent}
        """,
    "agents/support/agent.py": "import mlflow\n\nANSWER = 'hello'\n",
    "data/support.jsonl": '{"input": [{"role": "user", "content": "hi"}]}\n',
}


def test_an_agent_edited_after_its_gate_is_not_what_the_gate_judged(project: Callable[..., Project]) -> None:
    proj = project(AGENT, base=False)

    def current_hash() -> str:
        loaded = load_project(proj.path("llmops.yaml"))
        flow: FlowSpec = loaded.config.flows["support"]
        return flow_hash(flow, loaded.info(flow.path))

    judged = current_hash()
    entry = FlowResult.parse({"run": {"name": "support_1", "flow_hash": judged},
                              "gate": {"passed": True, "flow_hash": judged}})
    assert unjudged(entry, current_hash()) is None
    proj.replace("agents/support/agent.py", "'hello'", "'goodbye'")
    assert current_hash() != judged
    assert "content changed since the run the gate judged (support_1" in str(unjudged(entry, current_hash()))
    assert "no content hash" in str(unjudged(FlowResult.parse({"gate": {"passed": True}}), judged))


# --- item 11: lint stops only the flows it concerns; messages say true consequences ---------------------------------

@pytest.mark.executor
def test_a_lint_error_in_an_evaluation_stops_its_flow_not_the_others(cli: Cli, run_project: Callable[..., Project],
                                                                     run_env: FakeOpenAI) -> None:
    proj = run_project()
    proj.replace("llmops.yaml", "loud: ${run.outputs.loud}", "loud: ${run.outputs.lowd}")
    result = cli("batch-run", "--flow", "echo", "--flow", "chat")
    assert result.code == 1  # the error is still reported
    assert "mapping-output-unknown" in result.err and "echo: not run: the lint errors above stop it" in result.err
    flows = summary(proj)["flows"]
    assert flows["chat"]["run"]["status"] == "completed" and "echo" not in flows
    shown = cli("comment").out  # the run that ran passed, but the step did not: never green
    assert "❌ llmops-ci: batch-run failed (exit 1): batch-run: lint errors stopped echo" in shown
    pr = cli("pr", "--flow", "echo", "--flow", "chat")
    assert pr.code == 1 and "no flow was run" not in pr.err, pr.err
    assert summary(proj)["flows"]["chat"]["run"]["status"] == "completed"
    assert "1 lint error" in proj.read(".llmops/comment.md")


def test_a_column_missing_on_some_lines_says_what_prompt_flow_does(project: Callable[..., Project]) -> None:
    proj = project({**RUN_PROJECT, "data/echo.jsonl": '{"text": "a", "expected": "A"}\n{"expected": "B"}\n'},
                   base=False)
    (hit,) = [f for f in proj.lint().findings if f.rule == "mapping-column-unknown"]
    assert "missing on 1 of 2 lines" in hit.message
    assert "runs those lines with the text 'nan' as the value" in hit.message and "would fail" not in hit.message


FLEX_MODEL = {
    "llmops.yaml": """\
        version: 1
        connections:
          openai: {type: open_ai, base_url: "${env:OPENAI_BASE_URL}", api_key: "${env:OPENAI_API_KEY}"}
        flows:
          chat:
            path: flows/chat
            data: data/q.jsonl
            init:
              model_config: {connection: openai}
        """,
    "flows/chat/flow.flex.yaml": "entry: chat:Chat\n",
    "flows/chat/chat.py": """\
        from promptflow.core import OpenAIModelConfiguration


        class Chat:
            def __init__(self, model_config: OpenAIModelConfiguration) -> None:
                self.model_config = model_config

            def __call__(self, question: str) -> str:
                return question
        """,
    "data/q.jsonl": '{"question": "hi"}\n',
}


def test_a_model_configuration_without_its_required_field_is_a_lint_error(cli: Cli,
                                                                         project: Callable[..., Project]) -> None:
    proj = project(FLEX_MODEL, base=False)
    result = cli("lint", "--format", "json")
    assert result.code == 1
    (hit,) = json.loads(result.out)["findings"]
    assert hit["rule"] == "llm-model-missing" and "OpenAIModelConfiguration for 'model_config' needs 'model'" in \
        hit["message"] and hit["path"] == "llmops.yaml" and hit["line"] == 9
    proj.replace("llmops.yaml", "{connection: openai}", "{connection: openai, model: gpt-4o-mini, modle: x}")
    (typo,) = json.loads(cli("lint", "--format", "json").out)["findings"]
    assert typo["rule"] == "flex-model-config" and "no field 'modle'; did you mean 'model'?" in typo["message"]


EVAL_BASIC = """\
---
name: Basic Evaluate
description: basic evaluator for QA scenario
model:
  api: chat
  configuration:
    type: openai
    connection: openai
    model: gpt-4o-mini
  parameters:
    max_tokens: 200
    temperature: 0.2
inputs:
  question:
    type: string
  answer:
    type: string
outputs:
  score:
    type: string
---
system:
You are an AI assistant. Score the answer from 1 to 5 against the ground truth.

user:
question: {{question}}
answer: {{answer}}
ground_truth: {{ground_truth}}
"""


def test_an_unbound_prompt_variable_in_one_evaluation_stops_only_the_flow_it_evaluates(
        project: Callable[..., Project]) -> None:
    """Upstream prompty/eval-basic as an evaluation of one flow of several: that flow stops, the others run."""
    config = RUN_PROJECT["llmops.yaml"].replace("        flows:\n", """\
        flows:
          qa:
            path: flows/echo
            data: data/echo.jsonl
            column_mapping:
              text: ${data.text}
            evaluations:
              basic:
                path: flows/eval-basic/eval.prompty
                column_mapping:
                  question: ${data.text}
                  answer: ${run.outputs.loud}
""")
    proj = project({**RUN_PROJECT, "llmops.yaml": config, "flows/eval-basic/eval.prompty": EVAL_BASIC}, base=False)
    rules = {f.rule for f in proj.lint().findings if f.severity == "error"}
    assert rules == {"prompt-var-unbound"}
    loaded = load_project(proj.path("llmops.yaml"))
    blocked = lint_blocks(loaded, loaded.config.select(None))
    assert list(blocked) == ["qa"] and blocked["qa"][0].rule == "prompt-var-unbound"


def test_a_run_that_failed_as_a_whole_keeps_a_record_per_line_it_counts(tmp_path: Path) -> None:
    record = RunRecord("math", "math_1", "Failed", [], 1.0, error="PythonLoadError: no module x", data_lines=4)
    summary = save_run(tmp_path, record, 0, {"flow_hash": "f", "data_hash": "d", "started": "t"})
    lines = [json.loads(x) for x in (tmp_path / "runs" / "math" / "lines.jsonl").read_text().splitlines()]
    assert summary["lines_total"] == summary["lines_failed"] == len(lines) == 4
    assert [x["line"] for x in lines] == [0, 1, 2, 3] and {x["status"] for x in lines} == {"NotStarted"}
    assert "failed as a whole (PythonLoadError: no module x)" in lines[0]["error"]
    assert summary["finished"] and summary["flow_hash"] == "f"
    # over a base run: the lines the join gives, not the data's
    evaluation = RunRecord("math", "acc_1", "Failed", [], 1.0, data_lines=2, line_numbers=[0, 3], evaluation="acc")
    save_run(tmp_path, evaluation, None)
    lines = [json.loads(x) for x in (tmp_path / "runs" / "math" / "evals" / "acc" / "lines.jsonl").read_text()
             .splitlines()]
    assert [x["line"] for x in lines] == [0, 3]
    # one numbering in every message: the 1-based line_number the log and summary.json name, beside
    # prompt flow's 0-based line (docs/runs.md, #27)
    assert [x["line_number"] for x in lines] == [1, 4]
