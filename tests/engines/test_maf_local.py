"""Agent Framework flows (a declarative agent, a Python workflow) through the local backend in the framework itself,
over real HTTP to the fake OpenAI server; recorded once, replayed with the server down."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.engines.agent_framework.engine import AGENTS_PATH
from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import CliResult, Project

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("agent_framework") is None and not os.environ.get(AGENTS_PATH),
    reason=f"Agent Framework not installed (see docs/migrating-to-agent-framework.md, {AGENTS_PATH})")

CONFIG = """\
    version: 1
    connections:
      openai:
        type: open_ai
        base_url: ${env:OPENAI_BASE_URL}
        api_key: ${env:OPENAI_API_KEY}
    flows:
      classify-agent:
        path: agents/classify.yaml
        data: data/pages.jsonl
        column_mapping:
          input: ${data.text}
        max_failed_lines: 1
      classify-workflow:
        path: apps/classify
        agent_framework: {entry: workflow.py:create_workflow}
        data: data/pages.jsonl
        column_mapping:
          input: ${data.text}
        max_failed_lines: 1
    """

FILES = {
    "llmops.yaml": CONFIG,
    "agents/classify.yaml": """\
        kind: Prompt
        name: Classifier
        instructions: Classify the page as App, Movie or Academic. Answer in JSON.
        model:
          id: gpt-4o-mini
          provider: OpenAI
          apiType: Chat
          options:
            temperature: 0
          connection:
            kind: reference
            name: openai
        outputSchema:
          properties:
            category:
              type: string
              required: true
        """,
    "apps/classify/workflow.py": """\
        from typing_extensions import Never

        from agent_framework import WorkflowBuilder, WorkflowContext, executor
        from agent_framework.openai import OpenAIChatCompletionClient


        def create_workflow():
            agent = OpenAIChatCompletionClient(model="gpt-4o-mini").as_agent(
                name="classifier", instructions="Classify the page as App, Movie or Academic.")

            @executor(id="classify")
            async def classify(text: str, ctx: WorkflowContext[str]) -> None:
                response = await agent.run(text)
                await ctx.send_message(response.text)

            @executor(id="tidy")
            async def tidy(answer: str, ctx: WorkflowContext[Never, str]) -> None:
                await ctx.yield_output(answer.strip().lower())

            return WorkflowBuilder(start_executor=classify).add_edge(classify, tidy).build()
        """,
    "data/pages.jsonl": "\n".join(json.dumps(r) for r in [
        {"text": "a mobile app store page", "label": "App"},
        {"text": "a film review", "label": "Movie"},
        {"text": "FAIL please", "label": "Academic"}]) + "\n",
}


def model(prompt: str) -> str:
    if "app" in prompt.strip().splitlines()[-1].lower():  # the user message (the system prompt names every label)
        return json.dumps({"category": "App"})
    return json.dumps({"category": "Movie"})


def lines(root: Path, state: str, flow: str) -> list[dict]:
    return [json.loads(x) for x in (root / state / "runs" / flow / "lines.jsonl").read_text().splitlines()]


@pytest.mark.executor
def test_agent_and_workflow_run_record_and_replay_offline(project: Callable[..., Project],
                                                          cli: Callable[..., CliResult], run_env: FakeOpenAI,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run_env.answer = model
    proj = project(FILES, base=False)
    result = cli("batch-run", "--state-dir", "state", "--llm-cache", "record", "--workers", "2")
    assert result.code == 0, result.err
    summary = json.loads((proj.root / "state" / "summary.json").read_text())["flows"]
    for flow in ("classify-agent", "classify-workflow"):
        run = summary[flow]["run"]
        assert (run["lines_total"], run["lines_failed"]) == (3, 1), (flow, run)
        assert run["errors"][0]["line"] == 3  # 1-based, as prompt flow shows lines
    agent = lines(proj.root, "state", "classify-agent")
    assert agent[0]["outputs"] == {"output": '{"category": "App"}', "category": "App"}
    assert agent[1]["outputs"]["category"] == "Movie"
    # tokens are what the server's usage blocks said, per line
    served = [r for r in run_env.requests if "FAIL" not in json.dumps(r["body"])]
    assert agent[0]["tokens"]["total"] == agent[0]["tokens"]["prompt"] + agent[0]["tokens"]["completion"] > 0
    workflow = lines(proj.root, "state", "classify-workflow")
    assert [w["outputs"] for w in workflow[:2]] == [{"output": '{"category": "app"}'},
                                                    {"output": '{"category": "movie"}'}]
    assert workflow[0]["tokens"]["total"] > 0
    # the agent's system prompt reached the server: the framework ran the file
    assert any(m.get("content", "").startswith("Classify the page") for r in served
               for m in r["body"]["messages"] if m["role"] == "system")
    calls = len(run_env.requests)

    # replay: no server, no key
    run_env.stop()
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    result = cli("batch-run", "--state-dir", "replay", "--llm-cache", "replay")
    assert result.code == 0, result.err
    again = json.loads((proj.root / "replay" / "summary.json").read_text())["flows"]
    assert again["classify-agent"]["run"]["llm_cache"]["hits"] == 2
    assert [x["outputs"] for x in lines(proj.root, "replay", "classify-agent")[:2]] == [a["outputs"] for a in agent[:2]]
    assert [x["tokens"] for x in lines(proj.root, "replay", "classify-workflow")[:2]] == [
        w["tokens"] for w in workflow[:2]]
    assert len(run_env.requests) == calls


@pytest.mark.executor
def test_env_values_resolved_by_llmops_ci_and_unset_one_named(project: Callable[..., Project],
                                                              cli: Callable[..., CliResult],
                                                              run_env: FakeOpenAI,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """=Env.NAME in a `kind: key` connection is resolved without PowerFx; an unset one is exit 2 at its line."""
    files = dict(FILES)
    files["llmops.yaml"] = CONFIG.split("      classify-workflow:")[0]
    files["agents/classify.yaml"] = FILES["agents/classify.yaml"].replace(
        "kind: reference\n            name: openai", "kind: key\n            endpoint: =Env.MY_ENDPOINT\n"
        "            key: =Env.MY_KEY")
    proj = project(files, base=False)
    run_env.answer = model
    monkeypatch.setenv("MY_ENDPOINT", run_env.url + "/v1")
    monkeypatch.setenv("MY_KEY", "sk-my-own-key")
    result = cli("test", "--flow", "classify-agent", "--input", "input=an app page")
    assert result.code == 0, result.err
    assert "App" in result.out
    assert run_env.requests[-1]["api_key"] == "sk-my-own-key"
    monkeypatch.delenv("MY_ENDPOINT")
    result = cli("batch-run", "--state-dir", str(proj.root / "s"))
    assert result.code == 2
    assert "agents/classify.yaml:12" in result.err and "MY_ENDPOINT" in result.err


PLAIN_LOOP = """\
import asyncio, json, sys
from agent_framework_declarative import AgentFactory
text = open(sys.argv[1]).read()
agent = AgentFactory().create_agent_from_yaml(text)
out = []


async def main():
    for row in [json.loads(x) for x in open(sys.argv[2]) if x.strip()]:
        try:
            r = await agent.run(row["text"])
            u = r.usage_details or {}
            out.append({"text": r.text, "tokens": [u.get("input_token_count"), u.get("output_token_count"),
                                                   u.get("total_token_count")]})
        except Exception as exc:
            out.append({"error": type(exc).__name__})


asyncio.run(main())
print(json.dumps(out))
"""


@pytest.mark.executor
def test_lines_match_the_framework_called_directly(project: Callable[..., Project], cli: Callable[..., CliResult],
                                                   run_env: FakeOpenAI, tmp_path: Path) -> None:
    """Side by side with the official tool: the same agent file run by the framework in a plain loop (straight to the
    server) gives the same outputs, tokens and failing lines as llmops-ci's run through its proxy."""
    import subprocess
    import sys

    run_env.answer = model
    files = dict(FILES)
    files["llmops.yaml"] = CONFIG.split("      classify-workflow:")[0]
    files["agents/classify.yaml"] = FILES["agents/classify.yaml"].replace(
        "kind: reference\n            name: openai", "kind: key\n            endpoint: =Env.OPENAI_BASE_URL\n"
        "            key: =Env.OPENAI_API_KEY")
    proj = project(files, base=False)
    assert cli("batch-run", "--state-dir", "state", "--workers", "3").code == 0
    ours = lines(proj.root, "state", "classify-agent")
    resolved = (proj.root / "agents" / "classify.yaml").read_text().replace(
        "=Env.OPENAI_BASE_URL", os.environ["OPENAI_BASE_URL"]).replace("=Env.OPENAI_API_KEY",
                                                                      os.environ["OPENAI_API_KEY"])
    (tmp_path / "resolved.yaml").write_text(resolved)
    (tmp_path / "loop.py").write_text(PLAIN_LOOP)
    env = {**os.environ, "PYTHONPATH": os.environ.get(AGENTS_PATH, "")}
    done = subprocess.run([sys.executable, str(tmp_path / "loop.py"), str(tmp_path / "resolved.yaml"),
                           str(proj.root / "data" / "pages.jsonl")], env=env, capture_output=True, text=True,
                          check=True)
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(ours) == len(theirs) == 3, (ours, theirs)
    for mine, official in zip(ours, theirs, strict=True):
        if "error" in official:
            assert mine["status"] == "Failed"
            continue
        assert mine["status"] == "Completed" and mine["outputs"]["output"] == official["text"]
        assert [mine["tokens"][k] for k in ("prompt", "completion", "total")] == official["tokens"]


@pytest.mark.executor
def test_a_line_blocking_the_event_loop_is_failed_and_the_runner_stopped(
        project: Callable[..., Project], cli: Callable[..., CliResult], run_env: FakeOpenAI,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Synchronous code in an async executor cannot be cancelled from inside the runner: the parent stops it once
    nothing finished for --line-timeout plus the start-up grace; finished lines are kept, the rest failed."""
    from llmops_ci.engines.agent_framework import engine as maf_local

    monkeypatch.setattr(maf_local, "STARTUP_GRACE_S", 6.0)
    files = dict(FILES)
    files["llmops.yaml"] = """\
        version: 1
        flows:
          classify-agent:
            path: apps/block
            agent_framework: {entry: agent.py:agent}
            data: data/pages.jsonl
            column_mapping:
              input: ${data.text}
            max_failed_lines: 3
        """
    files["apps/block/agent.py"] = """\
        import time


        class Blocking:
            async def run(self, message):
                if "film" in message:
                    time.sleep(600)  # synchronous: blocks the event loop
                return type("R", (), {"text": "ok", "usage_details": None})()


        agent = Blocking()
        """
    proj = project(files, base=False)
    result = cli("batch-run", "--state-dir", "state", "--workers", "1", "--line-timeout", "2")
    assert result.code == 0, result.err
    got = lines(proj.root, "state", "classify-agent")
    assert [g["status"] for g in got] == ["Completed", "Failed", "Failed"]
    assert got[0]["outputs"] == {"output": "ok"}
    assert "answered nothing" in got[1]["error"]


@pytest.mark.executor
def test_declarative_workflow_runs_its_agents_and_replays(project: Callable[..., Project],
                                                          cli: Callable[..., CliResult], run_env: FakeOpenAI,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A `kind: Workflow` file with the declarative agents beside it (by name), through WorkflowFactory; the agents'
    `kind: reference` connections are the run's."""
    files = {k: v for k, v in FILES.items() if not k.startswith("apps/")}
    files["agents/workflow.yaml"] = """\
        kind: Workflow
        trigger:
          kind: OnConversationStart
          id: wf
          actions:
            - kind: InvokeAzureAgent
              id: ask
              agent:
                name: Classifier
        """
    files["llmops.yaml"] = CONFIG.split("      classify-workflow:")[0].replace("agents/classify.yaml",
                                                                             "agents/workflow.yaml")
    run_env.answer = model
    proj = project(files, base=False)
    assert cli("lint").code == 0
    result = cli("batch-run", "--state-dir", "state", "--llm-cache", "record")
    assert result.code == 0, result.err
    got = lines(proj.root, "state", "classify-agent")
    assert [g["outputs"] for g in got[:2]] == [{"output": '{"category": "App"}'}, {"output": '{"category": "Movie"}'}]
    assert got[0]["tokens"]["total"] > 0 and got[2]["status"] == "Failed"
    run_env.stop()
    monkeypatch.delenv("OPENAI_API_KEY")
    result = cli("batch-run", "--state-dir", "replay", "--llm-cache", "replay")
    assert result.code == 0, result.err
    assert [g["outputs"] for g in lines(proj.root, "replay", "classify-agent")[:2]] == [g["outputs"] for g in got[:2]]


@pytest.mark.executor
def test_an_agent_as_evaluation_scores_a_run(project: Callable[..., Project], cli: Callable[..., CliResult],
                                             run_env: FakeOpenAI) -> None:
    """A declarative agent as an evaluation: its input mapped from the base run's outputs, its metrics the mean of
    its numeric outputs (an outputSchema field), gated like any metric."""
    files = dict(FILES)
    files["llmops.yaml"] = CONFIG.split("      classify-workflow:")[0] + """\
        evaluations:
          judge:
            path: agents/judge.yaml
            column_mapping:
              input: ${run.outputs.category}
        gate:
          judge.score: {min: 0.4}
    """
    files["agents/judge.yaml"] = """\
        kind: Prompt
        name: Judge
        instructions: Score 1 if the category is App, else 0.
        model:
          id: gpt-4o-mini
          provider: OpenAI
          apiType: Chat
          connection:
            kind: reference
            name: openai
        outputSchema:
          properties:
            score:
              type: number
        """

    def answer(prompt: str) -> str:
        if prompt.startswith("Score"):
            return json.dumps({"score": 1 if prompt.strip().splitlines()[-1] == "App" else 0})
        return model(prompt)

    run_env.answer = answer
    proj = project(files, base=False)
    assert cli("lint").code == 0
    result = cli("pr", "--state-dir", "state")
    assert result.code == 0, result.err
    summary = json.loads((proj.root / "state" / "summary.json").read_text())["flows"]["classify-agent"]
    judge = summary["evaluations"]["judge"]
    assert judge["metrics"] == {"score": 0.5}
    # the base run's failed line has no output to score: the judge ran the two others
    judged = lines(proj.root, "state", "classify-agent/evals/judge")
    assert [(j["inputs"]["input"], j["outputs"]["score"]) for j in judged] == [("App", 1), ("Movie", 0)]
    assert summary["gate"]["passed"] is True
