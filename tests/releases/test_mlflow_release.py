"""Register and deploy MLflow agents locally: the sqlite registry with aliases, MLflow's scoring server, rollback."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from llmops_ci.config import FlowSpec, read_config
from llmops_ci.kinds.mlflow.kind import mlmodel_findings
from llmops_ci.kinds.mlflow.spec import MlflowAgentSpec
from llmops_ci.releases.mlflow import MlflowRelease
from llmops_ci.releases.mlflow_logging import mlmodel_resources
from llmops_ci.releases.spec import DeployPlan, ModelSpec, SmokeTest
from tests.engines.mlflow_agents import RESPONSES_AGENT
from tests.fakes.openai import FakeOpenAI

pytest.importorskip("mlflow", reason="needs the [mlflow] extra")

CONFIG = """\
version: 1
flows:
  support:
    path: agents/support
    data: data.jsonl
    mlflow_agent:
      code: agent.py
      interface: responses
      resources:
        serving_endpoint: [support-llm]
        vector_search_index: [main.docs.docs_index]
      pip_requirements: [mlflow-skinny==3.17.2, openai]
    register: {name: main.agents.support}
    deploy: {endpoint: support-agent, traffic: [10, 100]}
"""


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def project(tmp_path: Path, fake: FakeOpenAI) -> Callable[[str], tuple[MlflowRelease, FlowSpec]]:
    def make(source: str = RESPONSES_AGENT) -> tuple[MlflowRelease, FlowSpec]:
        (tmp_path / "llmops.yaml").write_text(CONFIG, encoding="utf-8")
        folder = tmp_path / "agents/support"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "agent.py").write_text(source, encoding="utf-8")
        (tmp_path / "data.jsonl").write_text(json.dumps({"input": "hello"}) + "\n", encoding="utf-8")
        config, problems = read_config(tmp_path / "llmops.yaml", {})
        assert config is not None and not problems, problems
        env = {"PATH": "/usr/bin:/bin", "OPENAI_BASE_URL": f"{fake.url}/v1", "OPENAI_API_KEY": "sk-test"}
        return MlflowRelease(tmp_path / "state", config.flows, env), config.flows["support"]

    return make


def model(version: str) -> ModelSpec:
    return ModelSpec(name="main.agents.support", version=version, flow="support", path=Path("."), description=None,
                     tags={"llmops.flow": "support", "git.commit": "abc"}, resources=())


def test_dry_run_shows_the_resources_mlmodel_will_declare(project: Callable[..., tuple[MlflowRelease, FlowSpec]]
                                                          ) -> None:
    release, flow = project()
    text = release.dry_run_model(model("c0ffee"))
    doc = yaml.safe_load(text)
    assert doc["log_model"]["resources"]["databricks"] == {"serving_endpoint": [{"name": "support-llm"}],
                                                           "vector_search_index": [{"name": "main.docs.docs_index"}]}
    assert "DatabricksVectorSearchIndex(index_name='main.docs.docs_index')" in doc["mlflow_resources"]
    agent = flow.block(MlflowAgentSpec)
    assert agent is not None and mlmodel_resources(agent) == {"resources": doc["log_model"]["resources"]}


@pytest.mark.executor
def test_register_is_content_addressed_with_aliases_and_deploy_rolls_back(
        project: Callable[..., tuple[MlflowRelease, FlowSpec]], tmp_path: Path) -> None:
    release, flow = project()
    assert release.register(model("hash1")) == ("main.agents.support", "1", True)
    assert release.register(model("hash1")) == ("main.agents.support", "1", False)  # same content, same version
    mlmodel = next((tmp_path / "state/mlflow/artifacts").rglob("MLmodel"))
    assert flow.block(MlflowAgentSpec) is not None and mlmodel_findings(mlmodel, flow.block(MlflowAgentSpec)) == []
    assert "main.docs.docs_index" in mlmodel.read_text()

    good = SmokeTest("hello.json", {"input": [{"role": "user", "content": "hi there"}]}, contains="ECHO: hi there")
    plan = DeployPlan(model("hash1"), "support-agent", None, 1, (10, 100), (good,))
    first = release.deploy(plan, (), keep=False)
    assert first.status == "deployed", first.message
    assert (first.deployment, first.previous, first.traffic) == ("blue", None, {"blue": 100})
    assert first.smoke[0].passed
    aliases = release._call("alias", {"name": "main.agents.support", "version": "1", "alias": "challenger"}, "a")
    # each version also carries its content alias, llmops_<hash>, by which it is found again
    content = {k: v for k, v in aliases["aliases"].items() if k.startswith("llmops_")}
    assert list(content.values()) == ["1"]
    assert {k: v for k, v in aliases["aliases"].items() if k not in content} == {"challenger": "1", "champion": "1"}

    (tmp_path / "agents/support/agent.py").write_text(RESPONSES_AGENT.replace("You answer", "You now answer"))
    assert release.register(model("hash2")) == ("main.agents.support", "2", True)
    bad = SmokeTest("strict.json", good.request, contains="a reply this fake never gives")
    second = release.deploy(DeployPlan(model("hash2"), "support-agent", None, 1, (10, 100), (bad,)), (), keep=False)
    assert second.status == "rolled_back" and second.deployment == "green" and second.traffic == {"blue": 100}
    assert "traffic stays on blue" in (second.message or "")
    aliases = release._call("alias", {"name": "main.agents.support", "version": "2", "alias": "challenger"}, "a")
    named = {k: v for k, v in aliases["aliases"].items() if not k.startswith("llmops_")}
    assert named == {"challenger": "2", "champion": "1"}  # champion did not move
    assert release.endpoint_state("support-agent")["serving"] == "blue"


def test_deploy_of_an_unregistered_model_says_register_first(
        project: Callable[..., tuple[MlflowRelease, FlowSpec]]) -> None:
    release, _ = project()
    from llmops_ci.core.errors import UsageError

    with pytest.raises(UsageError, match="register --flow support"):
        release.deploy(DeployPlan(model("nothere"), "support-agent", None, 1, (100,), ()), (), keep=False)


def test_dry_run_plan(project: Callable[..., tuple[MlflowRelease, FlowSpec]]) -> None:
    release, _ = project()
    doc = yaml.safe_load(release.dry_run_plan(DeployPlan(model("h"), "support-agent", None, 1, (10, 100), ())))
    assert doc["slot"] == "blue" and doc["traffic"] == [10, 100] and "--env-manager local" in doc["command"]





def test_declaring_another_resource_makes_another_version(project: Callable[..., tuple[MlflowRelease, FlowSpec]]
                                                          ) -> None:
    import dataclasses

    from llmops_ci.kinds.mlflow.spec import AgentResource
    from llmops_ci.releases.mlflow_logging import content_key
    from llmops_ci.releases.spec import content_hash

    _, flow = project()
    agent = flow.block(MlflowAgentSpec)
    assert agent is not None
    more = dataclasses.replace(agent, resources=(*agent.resources, AgentResource("table", "main.sales.orders")))
    fewer_reqs = dataclasses.replace(agent, pip_requirements=agent.pip_requirements[:1])
    keys = {content_hash(dataclasses.replace(flow, blocks={"mlflow_agent": a}), None)
            for a in (agent, more, fewer_reqs)}
    assert len(keys) == 3 and content_hash(flow, None) == content_hash(flow, None)
    # #27: one content identifier: the registry's tag is the model version's content hash itself
    assert content_key(model("h"), agent) == "h"
