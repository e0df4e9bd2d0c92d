"""--backend databricks deploys: the real WorkspaceClient against a serving API fake on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops_ci.config import DeploySpec, FlowSpec, read_config
from llmops_ci.core.errors import ServiceError, UsageError
from llmops_ci.kinds.mlflow.spec import MlflowAgentSpec
from llmops_ci.releases.databricks import DatabricksRelease, entity_name
from llmops_ci.releases.mlflow_logging import content_key
from llmops_ci.releases.spec import DeployPlan, ModelSpec, SmokeTest
from tests.fakes.databricks import FakeDatabricks

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
    agent = flows(tmp_path)["support"].block(MlflowAgentSpec)
    assert agent is not None
    for version, content in (("1", "hash1"), ("2", "hash2"), ("3", "hash3")):
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


def plan(content: str, traffic: tuple[int, ...] = (10, 100), smoke: tuple[SmokeTest, ...] = (HELLO,),
         **settings: Any) -> DeployPlan:
    model = ModelSpec(name=NAME, version=content, flow="support", path=Path("."), description=None, tags={},
                      resources=())
    return DeployPlan(model, "support-agent", None, 1, traffic, smoke,
                      settings=DeploySpec("support-agent", **settings) if settings else None)


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
    assert fake.aliases[NAME]["champion"] == "1"
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


# -- what a real workspace returns and does (issue: faithful fakes, agents.deploy() parity) ------------------------


def test_register_again_finds_the_version_through_mlflow_uc_client(fake: FakeDatabricks, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's real Unity Catalog client: a search carries no tags, so the version is found by its content
    alias, or (registered before aliases) by a get per version; registering it again reuses it."""
    pytest.importorskip("mlflow")
    from llmops_ci.engines.mlflow import runner as mlflow_runner

    fake.add_version(NAME, "4", "oldhash", alias=False)
    for key, value in {"MLFLOW_REGISTRY_URI": "databricks-uc", "MLFLOW_TRACKING_URI": "databricks",
                       "DATABRICKS_HOST": fake.url, "DATABRICKS_TOKEN": fake.token,
                       "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}.items():
        monkeypatch.setenv(key, value)
    key = content_key(plan("hash2").model, flows(tmp_path)["support"].block(MlflowAgentSpec))  # type: ignore[arg-type]
    out = mlflow_runner._log({"register_name": NAME, "content_hash": key, "alias": "challenger",
                              "content_alias": f"llmops_{key}"})
    assert (out["version"], out["created"]) == ("2", False)
    assert fake.aliases[NAME]["challenger"] == "2"
    assert mlflow_runner._find({"name": NAME, "content_hash": "oldhash"})["version"] == "4"
    assert "llmops_oldhash" not in fake.aliases[NAME]  # a find reads, it never writes
    assert mlflow_runner._find({"name": NAME, "content_hash": "nothing"})["version"] is None
    assert mlflow_runner._find({"name": "main.agents.none", "content_hash": "x"})["version"] is None


def test_deploy_finds_a_version_without_alias_by_reading_each(fake: FakeDatabricks, tmp_path: Path) -> None:
    rel = release(fake, tmp_path)
    key = content_key(plan("hash4").model, flows(tmp_path)["support"].block(MlflowAgentSpec))  # type: ignore[arg-type]
    fake.add_version(NAME, "4", key, alias=False)
    assert rel.find_version(plan("hash4").model) == "4"
    assert rel.find_version(plan("hash1").model) == "1"
    assert rel.find_version(plan("nothash").model) is None


def test_two_releases_end_to_end_with_agents_deploy_settings(fake: FakeDatabricks, tmp_path: Path) -> None:
    """Release 1 creates the endpoint as agents.deploy() would; release 2 shifts; release 3 fails and rolls back."""
    fake.experiments["/Shared/llmops-ci/support"] = "42"
    rel = release(fake, tmp_path)
    assert rel.deploy(plan("hash1"), (), keep=False).status == "deployed"
    created = next(b for m, p, b in fake.requests if (m, p) == ("POST", "/api/2.0/serving-endpoints"))
    entity = created["config"]["served_entities"][0]
    assert entity["scale_to_zero_enabled"] is False
    assert entity["environment_vars"] == {"ENABLE_MLFLOW_TRACING": "true", "RETURN_REQUEST_ID_IN_RESPONSE": "true",
                                          "MLFLOW_EXPERIMENT_ID": "42"}
    assert created["ai_gateway"] == {"inference_table_config": {
        "enabled": True, "catalog_name": "main", "schema_name": "agents", "table_name_prefix": "support"}}
    assert created["tags"] == [{"key": "MONITOR_EXPERIMENT_ID", "value": "42"}]
    assert rel.deploy(plan("hash2"), (), keep=False).status == "deployed"
    assert fake.routes("support-agent") == {"support-2": 100}
    fake.failing_versions.add("3")
    assert rel.deploy(plan("hash3"), (), keep=False).status == "rolled_back"
    assert fake.routes("support-agent") == {"support-2": 100}
    assert fake.aliases[NAME]["champion"] == "2"


AGENTS_ENTITY = {"name": "support_1", "entity_name": NAME, "entity_version": "1", "workload_size": "Small",
                 "workload_type": "CPU", "scale_to_zero_enabled": False, "instance_profile_arn":
                 "arn:aws:iam::123:instance-profile/agents", "environment_vars": {
                     "ENABLE_MLFLOW_TRACING": "true", "RETURN_REQUEST_ID_IN_RESPONSE": "true",
                     "MLFLOW_EXPERIMENT_ID": "7"},
                 "min_provisioned_concurrency": 4, "max_provisioned_concurrency": 8, "burst_scaling_enabled": True}


def agents_endpoint(fake: FakeDatabricks, *extra: dict[str, Any]) -> None:
    """An endpoint as databricks-agents' deploy() leaves it (ServedEntityOutput fields, output-only ones too)."""
    entities = [{**AGENTS_ENTITY, "state": {"deployment": "DEPLOYMENT_READY"}, "creator": "me@example.com"},
                *extra]
    fake.endpoints["support-agent"] = {
        "name": "support-agent", "id": "id-1", "tags": [{"key": "MONITOR_EXPERIMENT_ID", "value": "7"}],
        "config": {"served_entities": entities, "traffic_config": {"routes": [
            {"served_entity_name": e["name"], "traffic_percentage": 100 if e is entities[0] else 0}
            for e in entities]}},
        "state": {"ready": "READY", "config_update": "NOT_UPDATING"}}


def puts(fake: FakeDatabricks) -> list[dict[str, Any]]:
    return [b for m, p, b in fake.requests if m == "PUT" and p.endswith("/config")]


def test_a_shift_and_a_rollback_keep_every_field_of_the_serving_entity(fake: FakeDatabricks, tmp_path: Path) -> None:
    agents_endpoint(fake)
    fake.answer = lambda entity, body: (500, {"error_code": "INTERNAL_ERROR", "message": "no"})
    result = release(fake, tmp_path).deploy(plan("hash2"), (), keep=False)
    assert result.status == "rolled_back" and result.previous == "support_1"
    shift, rollback = puts(fake)
    assert shift["served_entities"][1] == AGENTS_ENTITY  # not reconfigured while traffic moves
    assert rollback["served_entities"] == [AGENTS_ENTITY]
    assert rollback["traffic_config"]["routes"] == [{"served_entity_name": "support_1", "traffic_percentage": 100}]
    assert not any(m == "PATCH" for m, _, _ in fake.requests)  # the user's monitoring tag stays


def test_keep_previous_keeps_earlier_versions_at_zero(fake: FakeDatabricks, tmp_path: Path) -> None:
    older = {**AGENTS_ENTITY, "name": "support_0", "entity_version": "0", "state": {"deployment": "DEPLOYMENT_READY"}}
    agents_endpoint(fake, older)
    rel = release(fake, tmp_path)
    assert rel.deploy(plan("hash2", (100,), keep_previous=2), (), keep=False).status == "deployed"
    final = puts(fake)[-1]
    assert [e["name"] for e in final["served_entities"]] == ["support-2", "support_1", "support_0"]
    assert fake.routes("support-agent") == {"support-2": 100, "support_1": 0, "support_0": 0}
    assert rel.deploy(plan("hash3", (50, 100)), (), keep=False).status == "deployed"
    steps = puts(fake)[-2:]
    assert [e["name"] for e in steps[0]["served_entities"]] == ["support-3", "support-2", "support_1", "support_0"]
    assert fake.routes("support-agent") == {"support-3": 100}


def test_an_existing_endpoint_gets_the_monitoring_tag(fake: FakeDatabricks, tmp_path: Path) -> None:
    agents_endpoint(fake)
    fake.endpoints["support-agent"]["tags"] = []
    assert release(fake, tmp_path).deploy(plan("hash2", (100,), experiment_id="99"), (), keep=False).status \
        == "deployed"
    assert fake.endpoints["support-agent"]["tags"] == [{"key": "MONITOR_EXPERIMENT_ID", "value": "99"}]
    assert puts(fake)[0]["served_entities"][0]["environment_vars"]["MLFLOW_EXPERIMENT_ID"] == "99"


def test_settings_turn_the_agents_defaults_off(fake: FakeDatabricks, tmp_path: Path) -> None:
    rel = release(fake, tmp_path)
    quiet = plan("hash1", scale_to_zero=True, tracing=False, inference_table=False)
    assert rel.deploy(quiet, (), keep=False).status == "deployed"
    created = next(b for m, p, b in fake.requests if (m, p) == ("POST", "/api/2.0/serving-endpoints"))
    entity = created["config"]["served_entities"][0]
    assert entity["scale_to_zero_enabled"] is True and "environment_vars" not in entity
    assert "ai_gateway" not in created and "tags" not in created


def test_dry_run_lists_the_declared_resources_and_the_agents_settings(tmp_path: Path) -> None:
    rel = DatabricksRelease(tmp_path, flows(tmp_path), {}, None)
    doc = yaml.safe_load(rel.dry_run_plan(plan("hash2")))
    assert doc["resources"] == ["serving_endpoint: llm"]
    created = doc["if_new"]["POST /api/2.0/serving-endpoints"]
    assert created["ai_gateway"]["inference_table_config"]["enabled"] is True
    assert created["config"]["served_entities"][0]["scale_to_zero_enabled"] is False
    assert "MLFLOW_EXPERIMENT_ID" in created["config"]["served_entities"][0]["environment_vars"]


UNDECLARED = """\
import mlflow
from databricks_langchain import ChatDatabricks
from mlflow.pyfunc import ResponsesAgent

LLM = ChatDatabricks(endpoint="databricks-claude-sonnet")


class Agent(ResponsesAgent):
    def predict(self, request):
        return None


mlflow.models.set_model(Agent())
"""


def test_register_lints_first_and_refuses_an_undeclared_resource(cli: Any, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops_ci.results.state import update_summary

    flows(tmp_path)
    (tmp_path / "agent/agent.py").write_text(UNDECLARED)
    (tmp_path / "llmops.yaml").write_text(CONFIG.replace("pip_requirements: [mlflow-skinny==3.17.2]",
                                                         "pip_requirements: [mlflow==3.17.2, databricks-langchain]"))
    monkeypatch.chdir(tmp_path)
    update_summary(tmp_path / ".llmops", "flows", {"support": {"gate": {"passed": True, "checks": []}}})
    refused = cli("register", "--backend", "databricks", "--dry-run")
    assert refused.code == 1, refused
    assert "agent/agent.py:5" in refused.err and "databricks-claude-sonnet" in refused.err
    assert "resource-undeclared" in refused.err and "--force" in refused.err
    forced = cli("register", "--backend", "databricks", "--dry-run", "--force")
    assert forced.code == 0, forced
    assert "registry: databricks-uc" in forced.out


ECHO_AGENT = """\
import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

GREETING = "v1"


class Echo(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        text = str(request.input[-1].model_dump().get("content"))
        return ResponsesAgentResponse(output=[self.create_text_output_item(f"{GREETING}: {text}", "m1")])


mlflow.models.set_model(Echo())
"""


def test_two_releases_registered_with_mlflow_uc_and_deployed_with_databricks_sdk(
        fake: FakeDatabricks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole round trip through the real clients: MLflow's Unity Catalog registry creates version 4 (model
    created, version created, files uploaded through the Files API, finalized, aliased), registering it again
    finds it by its alias, a changed agent becomes version 5; databricks-sdk deploys 4, shifts to 5, and a
    version whose update fails is rolled back to 5."""
    pytest.importorskip("mlflow")
    import sys

    from llmops_ci.engines.mlflow import runner as mlflow_runner

    name = "main.agents.echo"
    code = tmp_path / "echo" / "agent.py"
    code.parent.mkdir()
    monkeypatch.setattr(sys, "path", list(sys.path))  # the runner puts the agent's folder on it
    monkeypatch.chdir(tmp_path)  # and changes into it
    for key, value in {"MLFLOW_REGISTRY_URI": "databricks-uc", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/t.db",
                       "DATABRICKS_HOST": fake.url, "DATABRICKS_TOKEN": fake.token,
                       "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_DISABLE_TELEMETRY": "true",
                       "MLFLOW_MODEL_CATALOG_URI": ""}.items():
        monkeypatch.setenv(key, value)
    fake.model_versions[name] = [{"name": name, "version": str(v), "status": "READY", "tags": []} for v in (1, 2, 3)]

    def register(content: str, greeting: str) -> dict[str, Any]:
        code.write_text(ECHO_AGENT.replace('"v1"', f'"{greeting}"'))
        return mlflow_runner._log({
            "register_name": name, "content_hash": content, "content_alias": f"llmops_{content}",
            "alias": "challenger", "code": str(code), "interface": "responses",
            "pip_requirements": ["mlflow-skinny==3.17.2"], "resources": [],
            "input_example": {"input": [{"role": "user", "content": "hi"}]}, "experiment": "llmops-ci/echo",
            "artifacts": str(tmp_path / "artifacts")})

    first = register("c1", "v1")
    assert (first["version"], first["created"]) == ("4", True)
    assert fake.aliases[name] == {"llmops_c1": "4", "challenger": "4"}
    assert fake._version(name, "4")["status"] == "READY"
    assert fake.files["/Models/main/agents/echo/4/MLmodel"] and "/Models/main/agents/echo/4/agent.py" in fake.files
    assert (register("c1", "v1")["version"], register("c1", "v1")["created"]) == ("4", False)
    second = register("c2", "v2")
    assert (second["version"], second["created"]) == ("5", True)

    spec_flows = flows(tmp_path)
    rel = release(fake, tmp_path)

    def plan_for(content: str, version: str) -> DeployPlan:
        model = ModelSpec(name=name, version=content, flow="support", path=Path("."), description=None, tags={},
                          resources=())
        agent = spec_flows["support"].block(MlflowAgentSpec)
        assert agent is not None
        fake.aliases[name][f"llmops_{content_key(model, agent)}"] = version  # as register would alias it
        return DeployPlan(model, "echo-agent", None, 1, (10, 100), (SmokeTest("hi.json", HELLO.request,
                                                                                contains="echo-"),))

    assert rel.deploy(plan_for("c1", "4"), (), keep=False).status == "deployed"
    assert rel.deploy(plan_for("c2", "5"), (), keep=False).status == "deployed"
    assert fake.routes("echo-agent") == {"echo-5": 100}
    fake.model_versions[name].append({"name": name, "version": "6", "status": "READY", "tags": []})
    fake.failing_versions.add("6")
    assert rel.deploy(plan_for("c3", "6"), (), keep=False).status == "rolled_back"
    assert fake.routes("echo-agent") == {"echo-5": 100} and fake.aliases[name]["champion"] == "5"
