"""Replay never makes a live call, on upstream flows whose calls do not come from an LLM node: flex-flows/basic
builds its own AzureOpenAI client from AZURE_OPENAI_ENDPOINT: ${open_ai_connection.api_base}, flex-flows/chat-stream
streams through prompt flow's prompty without asking for usage. A call that still goes around the proxy fails its
line in replay."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.openai import FakeOpenAI
from tests.helpers.config import Config, Connection, Flow
from tests.helpers.projects import CliResult, Project

pytestmark = pytest.mark.executor

UPSTREAM = Path(__file__).parents[1] / "kinds" / "data" / "upstream"
AZURE_KEY = "azure-key-" + "c" * 24
CONFIG = Config(
    connections={"open_ai_connection": Connection("azure_open_ai", {
        "api_base": "${env:AZURE_BASE}", "api_key": "${env:AZURE_KEY}", "api_version": "2024-06-01"})},
    flows={
        "programmer": Flow(run_file="flows/flex-basic/run.yml"),
        "programmer-process": Flow(run_file="flows/flex-basic/run.yml",
                                   environment_variables={"LLMOPS_CI_EXECUTOR": "process"}),
        "chat": Flow("flows/chat-stream", data="flows/chat-stream/data.jsonl",
                     column_mapping={"question": "${data.question}"},
                     init={"model_config": {"connection": "open_ai_connection", "azure_deployment": "gpt-4o"}}),
        "around": Flow("flows/around", data="flows/flex-basic/data.jsonl", column_mapping={"text": "${data.text}"}),
    })
AROUND = """\
import os

from openai import AzureOpenAI


def run(text: str) -> str:
    # a literal endpoint in the code: nothing llmops-ci can point at the proxy
    client = AzureOpenAI(azure_endpoint=os.environ["LITERAL_ENDPOINT"], api_key="k", api_version="2024-06-01",
                         max_retries=0)
    reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}])
    return reply.choices[0].message.content
"""


def summary(proj: Project) -> dict:
    return json.loads(proj.read(".llmops/summary.json"))["flows"]


def lines(proj: Project, flow: str) -> list[dict]:
    return [json.loads(x) for x in proj.read(f".llmops/runs/{flow}/lines.jsonl").splitlines() if x.strip()]


@pytest.fixture
def replay_project(project: Callable[..., Project], fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
                   ) -> Project:
    proj = project({"flows/around/flow.flex.yaml": "entry: around:run\n", "flows/around/around.py": AROUND},
                   base=False, config=CONFIG)
    for name in ("flex-basic", "chat-stream"):
        shutil.copytree(UPSTREAM / name, proj.path(f"flows/{name}"))
    monkeypatch.setenv("AZURE_BASE", fake_openai.url)
    monkeypatch.setenv("AZURE_KEY", AZURE_KEY)
    monkeypatch.setenv("LITERAL_ENDPOINT", fake_openai.url)
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return proj


def test_record_then_replay_flows_with_their_own_clients(cli: Callable[..., CliResult], replay_project: Project,
                                                         fake_openai: FakeOpenAI,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    proj = replay_project
    record = cli("batch-run", "--flow", "programmer", "--flow", "chat", "--llm-cache", "record")
    assert record.code == 0, record.err
    recorded = {flow: [x["outputs"] for x in lines(proj, flow)] for flow in ("programmer", "chat")}
    for flow in ("programmer", "chat"):
        # before: programmer's calls bypassed the proxy (0 recorded, 0 tokens); chat's streams counted 0 tokens
        assert summary(proj)[flow]["run"]["llm_cache"]["recorded"] == 3, flow
        assert all(x["tokens"]["total"] > 0 for x in lines(proj, flow)), flow
    live = len(fake_openai.requests)
    assert live == 6
    monkeypatch.delenv("AZURE_BASE")
    monkeypatch.delenv("AZURE_KEY")  # offline, no key
    replay = cli("batch-run", "--flow", "programmer", "--flow", "chat", "--llm-cache", "replay")
    assert replay.code == 0, replay.err
    assert len(fake_openai.requests) == live  # not one live call
    for flow in ("programmer", "chat"):
        cache = summary(proj)[flow]["run"]["llm_cache"]
        assert (cache["hits"], cache["misses"]) == (3, 0), flow
        assert [x["outputs"] for x in lines(proj, flow)] == recorded[flow]
        assert all(x["tokens"]["total"] > 0 for x in lines(proj, flow)), flow


def test_the_process_opt_out_records_and_replays_the_same(cli: Callable[..., CliResult], replay_project: Project,
                                                          fake_openai: FakeOpenAI,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    proj = replay_project
    record = cli("batch-run", "--flow", "programmer-process", "--llm-cache", "record")
    assert record.code == 0, record.err
    assert "runs in its own prompt flow process (pf.run)" in record.err
    assert summary(proj)["programmer-process"]["run"]["llm_cache"]["recorded"] == 3
    recorded = [x["outputs"] for x in lines(proj, "programmer-process")]
    monkeypatch.delenv("AZURE_BASE")
    monkeypatch.delenv("AZURE_KEY")
    replay = cli("batch-run", "--flow", "programmer-process", "--llm-cache", "replay")
    assert replay.code == 0, replay.err
    assert len(fake_openai.requests) == 3
    assert summary(proj)["programmer-process"]["run"]["llm_cache"]["hits"] == 3
    assert [x["outputs"] for x in lines(proj, "programmer-process")] == recorded


def test_a_call_around_the_proxy_fails_its_line_in_replay(cli: Callable[..., CliResult], replay_project: Project,
                                                          fake_openai: FakeOpenAI) -> None:
    result = cli("batch-run", "--flow", "around", "--llm-cache", "replay")
    assert result.code == 1, result.err
    found = lines(replay_project, "around")
    assert [x["status"] for x in found] == ["Failed"] * 3
    assert all("does not go through the record/replay proxy" in x["error"] for x in found)
    assert fake_openai.requests == []
    # off (and record) the same flow runs, its calls going where its code sends them
    assert cli("batch-run", "--flow", "around").code == 0
    assert len(fake_openai.requests) == 3
