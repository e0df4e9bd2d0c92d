"""--backend databricks deploys: the real WorkspaceClient against a serving API fake on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops_ci.backends.databricks import DatabricksRelease, entity_name
from llmops_ci.backends.mlflow_release import content_key
from llmops_ci.config import FlowSpec, read_config
from llmops_ci.errors import ServiceError, UsageError
from llmops_ci.release import DeployPlan, ModelSpec, SmokeTest
from tests.fake_databricks import FakeDatabricks

pytest.importorskip("databricks.sdk", reason="needs the [mlflow] extra")
NAME = "main.agents.support"
HELLO = SmokeTest("hello.json", {"input": [{"role": "user", "content": "hi"}]}, contains="support-")


CONFIG = """\
version: 1
flows:
  support:
    path: agent
    mlflow_agent: {code: agent.py, interface: responses, resources: {serving_endpoint: [llm]},
                   pip_requirements: [mlflow-skinny==3.17.2]}
    register: {name: main.agents.support}
"""


def flows(tmp_path: Path) -> dict[str, FlowSpec]:
    """The project (llmops.yaml with one agent) in tmp_path; written the first time."""
    if not (tmp_path / "llmops.yaml").is_file():
        (tmp_path / "agent").mkdir()
        (tmp_path / "agent/agent.py").write_text("X = 1\n")
        (tmp_path / "llmops.yaml").write_text(CONFIG)
    config, problems = read_config(tmp_path / "llmops.yaml", {})
    assert config is not None and not problems, problems
    return config.flows


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeDatabricks]:
    server = FakeDatabricks().start()
    agent = flows(tmp_path)["support"].mlflow_agent
    assert agent is not None
    for version, content in (("1", "hash1"), ("2", "hash2")):
        server.add_version(NAME, version, content_key(plan(content).model, agent))
    yield server
    server.stop()


def release(fake: FakeDatabricks, tmp_path: Path, token: str | None = None, **kwargs: Any) -> DatabricksRelease:
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    def client() -> WorkspaceClient:
        return WorkspaceClient(config=Config(host=fake.url, token=token or fake.token, auth_type="pat",
                                             retry_timeout_seconds=5, http_timeout_seconds=5))

    return DatabricksRelease(tmp_path / "state", flows(tmp_path), {}, fake.url, client=client, poll_s=0.01,
                             ready_timeout_s=5, **kwargs)


def plan(content: str, traffic: tuple[int, ...] = (10, 100), smoke: tuple[SmokeTest, ...] = (HELLO,)) -> DeployPlan:
    model = ModelSpec(name=NAME, version=content, flow="support", path=Path("."), description=None, tags={},
                      resources=())
    return DeployPlan(model, "support-agent", None, 1, traffic, smoke)


def configs(fake: FakeDatabricks) -> list[dict[str, int]]:
    """Traffic of each config submitted (create or update), in order."""
    out = []
    for method, path, body in fake.requests:
        if (method, path) == ("POST", "/api/2.0/serving-endpoints"):
            body = body["config"]
        elif not (method == "PUT" and path.endswith("/config")):
            continue
        out.append({r["served_entity_name"]: r["traffic_percentage"] for r in body["traffic_config"]["routes"]})
    return out


def test_new_endpoint_is_created_waited_for_smoke_tested_and_aliased(fake: FakeDatabricks, tmp_path: Path) -> None:
    result = release(fake, tmp_path).deploy(plan("hash1"), (), keep=False)
    assert result.status == "deployed", result.message
    assert (result.deployment, result.previous, result.traffic) == ("support-1", None, {"support-1": 100})
    assert result.smoke[0].passed
    assert fake.requests[0][:2] == ("GET", "/.well-known/databricks-config")  # the SDK's probe comes first
    entity = fake.endpoints["support-agent"]["config"]["served_entities"][0]
    assert (entity["entity_name"], entity["entity_version"], entity["workload_size"]) == (NAME, "1", "Small")
    assert fake.aliases[NAME] == {"champion": "1"}
    assert any(p == "/serving-endpoints/support-agent/served-models/support-1/invocations"
               for _, p, _ in fake.requests)


def test_traffic_moves_step_by_step_then_the_old_entity_goes(fake: FakeDatabricks, tmp_path: Path) -> None:
    rel = release(fake, tmp_path)
    rel.deploy(plan("hash1"), (), keep=False)
    result = rel.deploy(plan("hash2", (10, 50, 100)), (), keep=False)
    assert result.status == "deployed" and result.previous == "support-1"
    assert configs(fake)[1:] == [{"support-2": 10, "support-1": 90}, {"support-2": 50, "support-1": 50},
                                 {"support-2": 100, "support-1": 0}, {"support-2": 100}]
    assert fake.routes("support-agent") == {"support-2": 100}
    assert fake.aliases[NAME]["champion"] == "2"


def test_failed_smoke_test_puts_all_traffic_back(fake: FakeDatabricks, tmp_path: Path) -> None:
    rel = release(fake, tmp_path)
    rel.deploy(plan("hash1"), (), keep=False)
    fake.answer = lambda entity, body: (500, {"error_code": "INTERNAL_ERROR", "message": "agent crashed"}) if (
        entity == "support-2") else (200, {"output": []})
    result = rel.deploy(plan("hash2"), (), keep=False)
    assert result.status == "rolled_back" and not result.smoke[0].passed
    assert "HTTP 500" in (result.smoke[0].error or "")
    assert configs(fake)[-1] == {"support-1": 100} and fake.routes("support-agent") == {"support-1": 100}
    assert "all traffic is back on support-1" in (result.message or "")
    assert fake.aliases[NAME]["champion"] == "1"


def test_failed_update_rolls_back(fake: FakeDatabricks, tmp_path: Path) -> None:
    rel = release(fake, tmp_path)
    rel.deploy(plan("hash1"), (), keep=False)
    fake.failing_versions.add("2")
    result = rel.deploy(plan("hash2"), (), keep=False)
    assert result.status == "rolled_back" and "UPDATE_FAILED" in (result.message or "")
    assert fake.routes("support-agent") == {"support-1": 100}


def test_conflict_is_retried_within_a_bound(fake: FakeDatabricks, tmp_path: Path) -> None:
    rel = release(fake, tmp_path, conflict_retries=2)
    rel.deploy(plan("hash1"), (), keep=False)
    fake.conflicts = 2
    assert rel.deploy(plan("hash2", (100,)), (), keep=False).status == "deployed"
    fake.conflicts = 10
    with pytest.raises(ServiceError, match="still being updated after 3 tries"):
        rel.deploy(plan("hash1", (100,)), (), keep=False)
    assert fake.conflicts == 7


def test_rejected_token_is_bad_input_with_what_to_set(fake: FakeDatabricks, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"refused the credentials.*DATABRICKS_TOKEN"):
        release(fake, tmp_path, token="dapi-wrong").deploy(plan("hash1"), (), keep=False)


def test_unregistered_content_says_register_first(fake: FakeDatabricks, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="register --backend databricks --flow support"):
        release(fake, tmp_path).deploy(plan("nothash"), (), keep=False)


def test_redeploying_the_serving_version_only_smoke_tests(fake: FakeDatabricks, tmp_path: Path) -> None:
    rel = release(fake, tmp_path)
    rel.deploy(plan("hash1"), (), keep=False)
    before = len(configs(fake))
    assert rel.deploy(plan("hash1"), (), keep=False).status == "deployed"
    assert len(configs(fake)) == before


def test_dry_run_prints_the_configs_without_credentials(tmp_path: Path) -> None:
    def no_client() -> Any:
        raise AssertionError("a dry run must not build a client")

    rel = DatabricksRelease(tmp_path, flows(tmp_path), {}, None, client=no_client)
    doc = yaml.safe_load(rel.dry_run_plan(plan("hash2", (10, 100))))
    steps = doc["if_serving"]
    assert len(steps) == 3
    body = steps[0]["PUT /api/2.0/serving-endpoints/support-agent/config"]
    assert body["traffic_config"]["routes"] == [{"served_entity_name": entity_name(NAME, "<version>"),
                                                 "traffic_percentage": 10},
                                                {"served_entity_name": "<the entity serving now>",
                                                 "traffic_percentage": 90}]
    assert body["served_entities"][0]["entity_name"] == NAME
    assert doc["if_new"]["POST /api/2.0/serving-endpoints"]["name"] == "support-agent"


def test_rejected_config_is_bad_input(fake: FakeDatabricks, tmp_path: Path) -> None:
    bad = plan("hash1")
    bad = DeployPlan(bad.model, bad.endpoint, "Huge", 1, bad.traffic, bad.smoke_tests)
    with pytest.raises(UsageError, match="Invalid workload size Huge"):
        release(fake, tmp_path).deploy(bad, (), keep=False)


def test_register_needs_a_unity_catalog_name(tmp_path: Path) -> None:
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent/agent.py").write_text("X = 1\n")
    (tmp_path / "llmops.yaml").write_text(
        "version: 1\nflows:\n  support:\n    path: agent\n    mlflow_agent: {code: agent.py, interface: responses}\n"
        "    register: {name: support}\n")
    config, _ = read_config(tmp_path / "llmops.yaml", {})
    assert config is not None
    rel = DatabricksRelease.for_config(tmp_path / "state", config, {})
    spec = ModelSpec(name="support", version="h", flow="support", path=tmp_path / "agent", description=None,
                     tags={}, resources=())
    with pytest.raises(UsageError, match=r"catalog\.schema\.model"):
        rel.register(spec)
