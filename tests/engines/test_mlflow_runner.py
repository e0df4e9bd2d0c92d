"""MLflow agent runs: the real mlflow.pyfunc in a child process, LLM calls over HTTP to a fake on 127.0.0.1."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmops_ci.core.errors import UsageError
from llmops_ci.core.progress import Progress
from llmops_ci.engines.mlflow.engine import MlflowAgentRunner, MlflowChild, data_example, tracking_uri
from llmops_ci.engines.mlflow.runner import agent_outputs, as_request, usage_tokens
from llmops_ci.kinds.base import FlowInfo
from llmops_ci.kinds.mlflow.spec import AgentResource, MlflowAgentSpec
from llmops_ci.llm.cassette import CacheSettings
from llmops_ci.results.records import RunJob, RunOptions, TestJob
from tests.engines.mlflow_agents import CHAT_AGENT, DATABRICKS_AGENT, RESPONSES_AGENT
from tests.fakes.openai import FakeOpenAI

pytest.importorskip("mlflow", reason="needs the [mlflow] extra")


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


Agent = Callable[..., tuple[MlflowAgentRunner, MlflowAgentSpec, Path]]


@pytest.fixture
def agent(tmp_path: Path, fake: FakeOpenAI) -> Agent:
    def make(source: str = RESPONSES_AGENT, interface: str = "responses", lines: list[dict] | None = None,
             environ: dict[str, str] | None = None) -> tuple[MlflowAgentRunner, MlflowAgentSpec, Path]:
        folder = tmp_path / "agents" / "support"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "agent.py").write_text(source, encoding="utf-8")
        data = tmp_path / "data.jsonl"
        data.write_text("".join(json.dumps(line) + "\n" for line in lines or []), encoding="utf-8")
        spec = MlflowAgentSpec(folder / "agent.py", interface, (AgentResource("serving_endpoint", "support-llm"),),
                               ("mlflow-skinny==3.17.2", "openai"))
        env = {"PATH": "/usr/bin:/bin", "OPENAI_BASE_URL": f"{fake.url}/v1", "OPENAI_API_KEY": "sk-test"}
        runner = MlflowAgentRunner(tmp_path / "state", {"support": spec}, {"support": folder},
                                   env if environ is None else environ)
        return runner, spec, data

    return make


def job(data: Path, *, workers: int = 3, cache: CacheSettings | None = None, mapping: dict | None = None) -> RunJob:
    folder = data.parent / "agents/support"
    return RunJob(flow="support", name="support_run_1", path=folder, info=FlowInfo("mlflow_agent", folder,
                                                                                    folder / "agent.py"), data=data,
                  column_mapping=mapping or {}, variant=None, connections={}, environment_variables={},
                  provider_connections=(), options=RunOptions(workers=workers), cache=cache)


def progress() -> Progress:
    return Progress("support", 3, io.StringIO(), live=False)


def test_request_from_a_data_line() -> None:
    assert as_request({"input": "hi", "expected": "x"}, "responses") == {"input": [{"role": "user", "content": "hi"}]}
    assert as_request({"q": "hi", "n": 1}, "chat", {"messages": "${data.q}", "custom_inputs": {"k": 1}}) == {
        "messages": [{"role": "user", "content": "hi"}], "custom_inputs": {"k": 1}}
    assert usage_tokens({"usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}}) == {
        "prompt": 3, "completion": 2, "total": 5}
    assert usage_tokens({"output": []}) == {}


def test_outputs_name_the_final_text() -> None:
    text = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"},
                                                                {"type": "output_text", "text": " there"}]}
    call = {"type": "function_call", "name": "lookup", "arguments": "{}", "call_id": "c1"}
    response = {"object": "response", "output": [call, text], "custom_outputs": {"k": 1}, "usage": {"total_tokens": 3}}
    assert agent_outputs(response, "responses") == {"output_text": "Hello there", "object": "response",
                                                    "output": [call, text], "custom_outputs": {"k": 1}}
    assert agent_outputs({"output": [call]}, "responses")["output_text"] is None  # only a tool call: no text
    chat = {"messages": [{"role": "assistant", "content": "first"}, {"role": "tool", "content": "x"},
                         {"role": "assistant", "content": "last"}]}
    assert agent_outputs(chat, "chat") == {"output_text": "last", **chat}


@pytest.mark.executor
def test_batch_predicts_once_per_line_concurrently(agent: Agent, fake: FakeOpenAI, tmp_path: Path) -> None:
    lines = [{"input": [{"role": "user", "content": "where is my order"}], "custom_inputs": {"id": 1}},
             {"input": "please FAIL this one"},
             {"input": [{"role": "user", "content": "refund"}]}]
    runner, _, data = agent(lines=lines)
    record = runner.run(job(data), progress())
    assert len(fake.requests) == 3  # one predict per line, not one list
    assert [line.status for line in record.lines] == ["Completed", "Failed", "Completed"]
    first = record.lines[0]
    assert first.outputs["output"][0]["content"][0]["text"] == first.outputs["output_text"] == "ECHO: where is my order"
    assert first.outputs["custom_outputs"] == {"id": 1}
    assert first.tokens["total"] == first.tokens["prompt"] + first.tokens["completion"] > 0
    assert first.duration_s is not None and first.inputs["custom_inputs"] == {"id": 1}
    assert "fake failure" in (record.lines[1].error or "") and record.lines[1].error_code == "BadRequestError"
    assert (tmp_path / "state/mlflow").is_dir() and not list((tmp_path / "agents/support").glob("mlruns"))


@pytest.mark.executor
def test_chat_agent_and_test_one_input(agent: Agent) -> None:
    runner, spec, _ = agent(CHAT_AGENT, "chat")
    record = runner.test(TestJob(path=spec.code.parent, info=FlowInfo("mlflow_agent", spec.code.parent, spec.code),
                                 inputs={"messages": "hello"}, variant=None, connections={},
                                 environment_variables={}, provider_connections=()))
    assert record.status == "Completed" and record.output["messages"][0]["content"] == "ECHO: hello"


@pytest.mark.executor
def test_agent_that_does_not_load_is_bad_input(agent: Agent) -> None:
    runner, _, data = agent("import mlflow\nimport no_such_module_xyz\n", lines=[{"input": "x"}])
    with pytest.raises(UsageError, match="no_such_module_xyz"):
        runner.run(job(data), progress())


@pytest.mark.executor
def test_replay_from_a_cassette_needs_no_endpoint(agent: Agent, fake: FakeOpenAI, tmp_path: Path) -> None:
    lines = [{"input": "hello"}]
    runner, _, data = agent(lines=lines)
    cassette = CacheSettings("record", tmp_path / "cassettes/support.json")
    recorded = runner.run(job(data, cache=cassette), progress())
    assert recorded.lines[0].status == "Completed" and recorded.llm_cache["recorded"] == 1
    offline, _, _ = agent(lines=lines, environ={"PATH": "/usr/bin:/bin"})
    replayed = offline.run(job(data, cache=CacheSettings("replay", cassette.cassette)), progress())
    assert replayed.lines[0].outputs["output"] == recorded.lines[0].outputs["output"]
    assert replayed.llm_cache["hits"] == 1 and len(fake.requests) == 1


@pytest.mark.executor
def test_log_load_predict_with_resources_in_the_sqlite_store(agent: Agent, fake: FakeOpenAI, tmp_path: Path) -> None:
    runner, spec, data = agent(lines=[{"input": "first line"}])
    code = spec.code
    child = MlflowChild(tmp_path / "state", runner.environ)
    logged = child.call("log", {"code": str(code), "interface": "responses",
                                "pip_requirements": list(spec.pip_requirements),
                                "resources": [["DatabricksServingEndpoint", "endpoint_name", "support-llm", False]],
                                "input_example": data_example(data, "responses")}, name="log")
    assert logged["status"] == "Completed", logged.get("traceback")
    assert fake.requests[0]["body"]["messages"][-1]["content"] == "first line"  # logging ran predict once
    predicted = child.call("predict", {"model_uri": logged["model_uri"], "requests": [
        {"input": [{"role": "user", "content": "a"}]}, {"input": [{"role": "user", "content": "b"}]}]}, name="p")
    assert predicted["status"] == "Completed", predicted.get("traceback")
    texts = [o["output"][0]["content"][0]["text"] for o in predicted["outputs"]]
    assert texts == ["ECHO: a", "ECHO: b"]
    assert tracking_uri(tmp_path / "state").endswith("state/mlflow/mlflow.db")
    mlmodel = next((tmp_path / "state/mlflow/artifacts").rglob("MLmodel")).read_text()
    assert "serving_endpoint" in mlmodel and "support-llm" in mlmodel and "pip_requirements" not in mlmodel


@pytest.mark.executor
def test_databricks_client_through_the_proxy_records_and_replays(agent: Agent, fake: FakeOpenAI,
                                                                  tmp_path: Path) -> None:
    lines = [{"input": "hello databricks"}]
    env = {"PATH": "/usr/bin:/bin", "DATABRICKS_HOST": fake.url, "DATABRICKS_TOKEN": "dapi-x",
           "DATABRICKS_AUTH_TYPE": "pat"}
    runner, _, data = agent(DATABRICKS_AGENT, lines=lines, environ=env)
    cassette = CacheSettings("record", tmp_path / "cassettes/support.json")
    recorded = runner.run(job(data, cache=cassette), progress())
    assert recorded.lines[0].status == "Completed", recorded.lines[0].error
    assert fake.requests[-1]["path"] == "/serving-endpoints/chat/completions"
    assert fake.requests[-1]["body"]["model"] == "databricks-meta-llama-3-3-70b-instruct"
    offline, _, _ = agent(DATABRICKS_AGENT, lines=lines, environ={"PATH": "/usr/bin:/bin",
                                                                 "DATABRICKS_AUTH_TYPE": "pat"})
    replayed = offline.run(job(data, cache=CacheSettings("replay", cassette.cassette)), progress())
    assert replayed.lines[0].status == "Completed", replayed.lines[0].error
    assert replayed.llm_cache["hits"] == 1 and len(fake.requests) == 1


@pytest.mark.executor
def test_a_hung_line_times_out_and_the_rest_go_on(agent: Agent, fake: FakeOpenAI) -> None:
    fake.slow_seconds = 120  # "SLOW" in a prompt hangs far past the line timeout
    lines = [{"input": "SLOW please"}, {"input": "one"}, {"input": "two"}]
    runner, _, data = agent(lines=lines)
    slow_job = RunJob(flow="support", name="support_slow", path=data.parent,
                      info=FlowInfo("mlflow_agent", data.parent, data.parent / "agent.py"), data=data,
                      column_mapping={}, variant=None, connections={}, environment_variables={},
                      provider_connections=(),
                      options=RunOptions(workers=1, line_timeout=8))
    record = runner.run(slow_job, progress())
    assert [line.status for line in record.lines] == ["Failed", "Completed", "Completed"]
    assert record.lines[0].error_code == "TimeoutError" and "--line-timeout" in (record.lines[0].error or "")
