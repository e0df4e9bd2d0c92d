"""Register and deploy Agent Framework flows on the local backend: the example's agent and workflow registered by
content, deployed blue/green behind smoke tests, serving the OpenAI Responses API through the real openai client."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmops_ci.engines.agent_framework.engine import AGENTS_PATH
from llmops_ci.project.loaded import load_project
from llmops_ci.results.provenance import flow_hash
from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import CliResult, classify_by_url, processes_using

pytestmark = [pytest.mark.executor, pytest.mark.skipif(
    importlib.util.find_spec("agent_framework") is None and not os.environ.get(AGENTS_PATH),
    reason=f"Agent Framework not installed (see docs/migrating-to-agent-framework.md, {AGENTS_PATH})")]
EXAMPLE = Path(__file__).parents[2] / "examples" / "web-classification-maf"
FLOWS = ("classify-agent", "classify-workflow")


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, FakeOpenAI]]:
    root = tmp_path / "ex"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".llmops", "__pycache__"))
    (root / ".llmops").mkdir()
    project = load_project(root / "llmops.yaml")  # the gate judged this very content (register checks its hash)
    judged = {f: flow_hash(project.config.flows[f], project.info(project.config.flows[f].path)) for f in FLOWS}
    passed = {"schema": "llmops-ci/summary@1",
              "flows": {f: {"gate": {"passed": True, "checks": [], "flow_hash": judged[f]}} for f in FLOWS}}
    (root / ".llmops" / "summary.json").write_text(json.dumps(passed))
    server = FakeOpenAI(answer=classify_by_url).start()
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-deploy-" + "d" * 20)
    monkeypatch.chdir(root)
    private = Path(tempfile.mkdtemp(prefix="rel-"))
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    yield root, server
    server.stop()
    assert processes_using(tmp_path) == []
    shutil.rmtree(private, ignore_errors=True)


def state(root: Path) -> dict:
    return json.loads((root / ".llmops" / "summary.json").read_text())["flows"]


def test_register_and_deploy_agent_and_workflow(cli: Callable[..., CliResult], example: tuple[Path, FakeOpenAI]
                                                ) -> None:
    root, server = example
    for flow in FLOWS:
        result = cli("register", "--flow", flow)
        assert result.code == 0, result.err
        version = state(root)[flow]["register"]["version"]
        model = state(root)[flow]["register"]["name"]
        record = json.loads((root / ".llmops" / "registry" / model / version / "model.json").read_text())
        assert record["kind"] == "agent_framework"
        assert cli("register", "--flow", flow).code == 0
        assert state(root)[flow]["register"]["created"] is False  # same content, same version
        result = cli("deploy", "--flow", flow)
        assert result.code == 0, result.err
        deploy = state(root)[flow]["deploy"]
        assert (deploy["status"], deploy["deployment"], deploy["traffic"]) == ("deployed", "blue", {"blue": 100})
        assert deploy["smoke"][0]["passed"] is True, deploy["smoke"]
    assert server.requests  # the served agent called its real endpoint (no proxy in serving)

    # a smoke test that fails: green is tried, blue keeps serving
    (root / "tests" / "smoke" / "movie.json").write_text(json.dumps({
        "request": {"input": "https://www.imdb.com/title/tt0111161/"}, "expect": {"status": 200, "contains": "App"}}))
    agent = root / "agents" / "classify.yaml"
    agent.write_text(agent.read_text().replace("Answer with the JSON object only.", "Answer with JSON only."))
    assert cli("register", "--flow", "classify-agent").code == 1  # content the gate never judged
    assert cli("register", "--flow", "classify-agent", "--force").code == 0
    result = cli("deploy", "--flow", "classify-agent")
    assert result.code == 1
    deploy = state(root)["classify-agent"]["deploy"]
    assert (deploy["status"], deploy["deployment"], deploy["traffic"]) == ("rolled_back", "green", {"blue": 100})


def test_served_agent_answers_the_responses_api(cli: Callable[..., CliResult],
                                                example: tuple[Path, FakeOpenAI]) -> None:
    """A kept slot is an OpenAI Responses endpoint: the real openai client reads its answer and usage."""
    from openai import OpenAI

    root, _ = example
    assert cli("register", "--flow", "classify-agent").code == 0
    result = cli("deploy", "--flow", "classify-agent", "--keep")
    assert result.code == 0, result.err
    url = state(root)["classify-agent"]["deploy"]["url"]
    pid = json.loads((root / ".llmops" / "endpoints" / "web-classification-agent.json").read_text())["slots"][
        "blue"]["pid"]
    try:
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        response = client.responses.create(model="web-classification-agent",
                                           input="https://www.imdb.com/title/tt0111161/")
        assert json.loads(response.output_text) == {"category": "Movie", "evidence": "Url"}
        assert response.usage is not None and response.usage.total_tokens > 0
    finally:
        os.killpg(pid, 15)
