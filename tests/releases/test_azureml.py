"""The Azure ML backend, offline: entity YAML that azure-ai-ml loads back, and register/deploy through a real
``MLClient`` whose HTTP transport is a fake Azure Resource Manager (plus the scoring URI) kept in memory."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("azure.ai.ml")

from azure.ai.ml import MLClient, load_model, load_online_deployment, load_online_endpoint
from azure.ai.ml.entities import Environment
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpRequest, HttpTransport
from azure.core.pipeline.transport import HttpResponse as TransportResponse
from azure.core.rest import HttpRequest as RestRequest
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict

from llmops_ci.config import DeploySpec
from llmops_ci.core.errors import UsageError
from llmops_ci.releases.azureml import release as azureml
from llmops_ci.releases.azureml import settings as azureml_settings
from llmops_ci.releases.azureml.release import AzureMLRelease, WorkspaceScope, dry_run_yaml
from llmops_ci.releases.bluegreen import traffic_steps
from llmops_ci.releases.spec import DeployPlan, ModelSpec, Resource, SmokeTest

pytestmark = pytest.mark.filterwarnings("ignore:The `context` parameter is deprecated:DeprecationWarning")

SUB, GROUP, WS = "00000000-0000-0000-0000-000000000001", "rg-llmops", "ws-llmops"
ARM_ID = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.MachineLearningServices/workspaces/{WS}"
ARM = "https://management.azure.com" + ARM_ID
SCORING = "https://{}.eastus.inference.ml.azure.com/score"
ENV_PUT = "/environments/CliV2AnonymousEnvironment/versions/*"


# ------------------------------------------------------------------------------------------------ fakes


class FakeCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


class _Response(TransportResponse):
    def __init__(self, request: HttpRequest, status: int, body: Any) -> None:
        super().__init__(request, None)
        self.status_code = status
        self.reason = "OK" if status < 400 else "Error"
        self.content_type = "application/json"
        self.headers = {"Content-Type": "application/json", "x-ms-request-id": "fake"}
        self._body = body if isinstance(body, bytes) else json.dumps(body).encode()

    def body(self) -> bytes:
        return self._body

    def json(self) -> Any:
        return json.loads(self._body)


class _Closed:
    def close(self) -> None:
        pass


def _response(request: Any, status: int, body: Any) -> Any:
    """A legacy transport response or, for an ``azure.core.rest`` request, a rest one (newer generated clients
    read those with ``iter_bytes``), its content already in memory."""
    if not isinstance(request, RestRequest):
        return _Response(request, status, body)
    data = json.dumps(body).encode()
    response = HttpResponseImpl(
        request=request, internal_response=_Closed(), status_code=status, reason="OK" if status < 400 else "Error",
        content_type="application/json", stream_download_generator=lambda **kw: iter([data]),
        headers=case_insensitive_dict({"Content-Type": "application/json", "x-ms-request-id": "fake"}))
    response._content = data
    return response


def _not_found(what: str) -> tuple[int, Any]:
    return 404, {"error": {"code": "ResourceNotFound", "message": f"{what} not found"}}


class FakeAzureML(HttpTransport):
    """Workspace ``ws`` in memory: models, connections, online endpoints and deployments, environments.

    Every PUT completes at once (``provisioningState: Succeeded`` in the 200 response, so the LRO pollers
    stop after one request). ``score`` answers invocations: (deployment, request body) -> (status, body).
    """

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []  # (method, path below the workspace, or the URL)
        self.bodies: list[Any] = []
        self.models: dict[str, dict[str, Any]] = {}
        self.connections: set[str] = set()
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.fail_deployment = False
        self.fail_traffic_at: int | None = None  # fail the endpoint PUT whose traffic gives the new slot this %
        self.score: Callable[[str, dict[str, Any]], tuple[int, Any]] = lambda slot, body: (200, {"answer": "ok"})

    # HttpTransport
    def __enter__(self) -> FakeAzureML:
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, request: HttpRequest, **kwargs: Any) -> Any:
        url = request.url.split("?")[0]
        path = url[len(ARM):] if url.startswith(ARM) else url
        body = json.loads(request.body) if isinstance(request.body, str | bytes) and request.body else None
        self.log.append((request.method, path))
        self.bodies.append(body)
        status, out = self.route(request.method, path, body, request.headers)
        return _response(request, status, out)

    # ARM
    def route(self, method: str, path: str, body: Any, headers: Any) -> tuple[int, Any]:
        if path == "":
            return 200, {"id": ARM_ID, "name": WS, "location": "eastus", "properties": {}}
        if m := re.fullmatch(r"/models/([^/]+)/versions/([^/]+)", path):
            key = f"{m[1]}:{m[2]}"
            if method == "PUT":
                self.models[key] = {**body, "id": ARM_ID + path, "name": m[2],
                                    "properties": {"flavors": {}, **body["properties"]}}
            return (200, self.models[key]) if key in self.models else _not_found(f"model {key}")
        if m := re.fullmatch(r"/models/([^/]+)/versions", path):
            return 200, {"value": [v for k, v in self.models.items() if k.startswith(m[1] + ":")]}
        if m := re.fullmatch(r"/connections/([^/]+)", path):
            if m[1] not in self.connections:
                return _not_found(f"connection {m[1]}")
            return 200, {"id": ARM_ID + path, "name": m[1],
                         "properties": {"authType": "ApiKey", "category": "AzureOpenAI", "target": "https://x",
                                        "metadata": {}}}
        if m := re.fullmatch(r"/environments/([^/]+)/versions/([^/]+)", path):
            return 200, {"id": ARM_ID + path, "name": m[2], **(body or {})}
        if m := re.fullmatch(r"/onlineEndpoints/([^/]+)", path):
            return self.endpoint(method, m[1], path, body)
        if m := re.fullmatch(r"/onlineEndpoints/([^/]+)/deployments", path):
            return 200, {"value": [v for k, v in self.deployments.items() if k.startswith(m[1] + "/")]}
        if m := re.fullmatch(r"/onlineEndpoints/([^/]+)/listKeys", path):
            return 200, {"primaryKey": "key1", "secondaryKey": "key2"}
        if m := re.fullmatch(r"/onlineEndpoints/([^/]+)/deployments/([^/]+)", path):
            return self.deployment(method, m[1], m[2], path, body)
        if m := re.fullmatch(r"https://([^.]+)\.eastus\.inference\.ml\.azure\.com/score", path):
            return self.score(str(headers.get("azureml-model-deployment")), body)
        return 400, {"error": {"code": "Unexpected", "message": f"the fake does not know {method} {path}"}}

    def endpoint(self, method: str, name: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "PUT":
            traffic = body["properties"].get("traffic") or {}
            if self.fail_traffic_at is not None and traffic.get(self.new_slot(name)) == self.fail_traffic_at:
                return 409, {"error": {"code": "Conflict", "message": "endpoint update failed"}}
            props = {**body["properties"], "provisioningState": "Succeeded", "scoringUri": SCORING.format(name)}
            self.endpoints[name] = {**body, "id": ARM_ID + path, "name": name, "properties": props}
        if name not in self.endpoints:
            return _not_found(f"endpoint {name}")
        return 200, self.endpoints[name]

    def new_slot(self, endpoint: str) -> str | None:
        names = [k.split("/")[1] for k in self.deployments if k.startswith(endpoint + "/")]
        return names[-1] if names else None

    def deployment(self, method: str, endpoint: str, name: str, path: str, body: Any) -> tuple[int, Any]:
        key = f"{endpoint}/{name}"
        if method == "PUT":
            if self.fail_deployment:
                return 400, {"error": {"code": "BadArgument", "message": "image pull failed"}}
            self.deployments.pop(key, None)  # re-insert: the last one created is the new slot
            self.deployments[key] = {**body, "id": ARM_ID + path, "name": name,
                                     "properties": {"scaleSettings": {"scaleType": "Default"}, **body["properties"],
                                                    "provisioningState": "Succeeded"}}
        if key not in self.deployments:
            return _not_found(f"deployment {key}")
        return 200, self.deployments[key]

    # what tests look at
    def writes(self) -> list[tuple[str, str]]:
        """Requests that change something (the anonymous environment's content-hash version as ``*``)."""
        return [(m, re.sub(r"^(/environments/[^/]+/versions/).+", r"\1*", p)) for m, p in self.log
                if m in ("PUT", "POST", "DELETE") and not p.endswith("/listKeys")]

    def traffic_puts(self, endpoint: str = "chat-ep") -> list[dict[str, int]]:
        return [b["properties"].get("traffic") or {} for (m, p), b in zip(self.log, self.bodies, strict=True)
                if m == "PUT" and p == f"/onlineEndpoints/{endpoint}"]


@pytest.fixture
def fake() -> FakeAzureML:
    return FakeAzureML()


@pytest.fixture
def ml_client(fake: FakeAzureML) -> MLClient:
    return MLClient(FakeCredential(), SUB, GROUP, WS, transport=fake)


@pytest.fixture
def no_upload(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The flow folder's upload to the workspace's blob store goes through azure-storage-blob clients that
    azure-ai-ml builds without the MLClient's transport; record the folder instead of uploading it."""
    uploaded: list[Path] = []

    def check_and_upload(artifact: Any, *args: Any, **kwargs: Any) -> tuple[Any, None]:
        uploaded.append(Path(artifact.path))
        (Path(artifact.path) / "flow.dag.yaml").read_text()  # the snapshot exists while it is uploaded
        artifact.path = f"azureml://datastores/workspaceblobstore/paths/LocalUpload/fake/{Path(artifact.path).name}"
        return artifact, None

    import azure.ai.ml.operations._model_operations as model_ops

    monkeypatch.setattr(model_ops, "_check_and_upload_path", check_and_upload)
    return uploaded


# ------------------------------------------------------------------------------------------------ specs


def _flow(tmp_path: Path) -> Path:
    flow = tmp_path / "flows" / "chat"
    flow.mkdir(parents=True)
    (flow / "flow.dag.yaml").write_text(
        "inputs:\n  question: {type: string, is_chat_input: true}\n"
        "  chat_history: {type: list, is_chat_history: true}\n"
        "outputs:\n  answer: {type: string, reference: '${llm.output}', is_chat_output: true}\n"
        "nodes:\n- name: llm\n  type: llm\n  source: {type: code, path: chat.jinja2}\n"
        "  inputs: {deployment_name: gpt-35, question: '${inputs.question}'}\n"
        "  connection: aoai\n  api: chat\n")
    (flow / "chat.jinja2").write_text("user: {{question}}\n")
    return flow


def _spec(tmp_path: Path, **kw: Any) -> ModelSpec:
    base: dict[str, Any] = dict(
        name="chat-model", version="a1b2c3d4e5f6", flow="chat", path=_flow(tmp_path), description="the chat flow",
        tags={"llmops.flow": "chat", "git.commit": "abc"}, resources=(Resource("llm", "aoai", "gpt-4o-mini"),),
        connections={"llm": {"connection": "aoai", "deployment_name": "gpt-4o-mini"}},
        chat_input="question", chat_output="answer", chat_history="chat_history")
    return ModelSpec(**{**base, **kw})


def _plan(spec: ModelSpec, **kw: Any) -> DeployPlan:
    base: dict[str, Any] = dict(
        model=spec, endpoint="chat-ep", instance_type="Standard_DS3_v2", instance_count=2, traffic=(10, 100),
        smoke_tests=(SmokeTest("hello.json", {"question": "hi", "chat_history": []}, fields=("answer",)),
                     SmokeTest("bye.json", {"question": "bye", "chat_history": []}, contains="ok")),
        environment_variables={"PROMPTFLOW_RESPONSE_INCLUDED_FIELDS": '["answer"]'}, request_timeout_ms=90_000)
    return DeployPlan(**{**base, **kw})


# ------------------------------------------------------------------------------------------------ dry run


def _docs(text: str) -> list[str]:
    return text.split("---\n")


def test_dry_run_yaml_loads_with_azure_ai_ml(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    plan = _plan(spec)
    text = dry_run_yaml(plan, spec, WorkspaceScope(SUB, GROUP, WS))
    docs = _docs(text)
    assert len(docs) == 3
    files = []
    for i, doc in enumerate(docs):
        files.append(tmp_path / f"doc{i}.yaml")
        files[-1].write_text(doc)

    model = load_model(files[0])
    assert (model.name, model.version, model.type) == ("chat-model", "a1b2c3d4e5f6", "custom_model")
    assert Path(str(model.path)) == spec.path.absolute()
    assert model.tags == spec.tags
    assert model.properties["azureml.promptflow.source_flow_id"] == "chat"
    assert model.properties["is-promptflow"] == "true"
    assert model.properties["azureml.promptflow.mode"] == "chat"
    assert model.properties["azureml.promptflow.chat_input"] == "question"
    assert model.properties["azureml.promptflow.chat_output"] == "answer"
    assert model.properties["azureml.promptflow.chat_history"] == "chat_history"
    assert json.loads(model.properties["llmops.resources"]) == [
        {"node": "llm", "connection": "aoai", "deployment": "gpt-4o-mini"}]

    endpoint = load_online_endpoint(files[1])
    assert (endpoint.name, endpoint.auth_mode) == ("chat-ep", "key")
    assert endpoint.properties == {"enforce_access_to_default_secret_stores": "enabled"}

    deployment = load_online_deployment(files[2])
    assert (deployment.name, deployment.endpoint_name) == ("blue", "chat-ep")
    assert deployment.model == "chat-model:a1b2c3d4e5f6"  # the loader drops the azureml: prefix
    assert (deployment.instance_type, deployment.instance_count) == ("Standard_DS3_v2", 2)
    assert deployment.request_settings is not None and deployment.request_settings.request_timeout_ms == 90_000
    env = deployment.environment
    assert isinstance(env, Environment)
    assert env.image == azureml_settings.PROMPTFLOW_IMAGE
    assert env.inference_config["scoringRoute"] == {"port": 8080, "path": "/score"}
    assert env.inference_config["livenessRoute"] == {"port": 8080, "path": "/health"}
    variables = deployment.environment_variables
    assert variables["PROMPTFLOW_RUN_MODE"] == "serving"
    assert variables["PROMPTFLOW_RESPONSE_INCLUDED_FIELDS"] == '["answer"]'
    assert variables["PRT_CONFIG_OVERRIDE"] == (
        f"deployment.subscription_id={SUB},deployment.resource_group={GROUP},deployment.workspace_name={WS},"
        "deployment.endpoint_name=chat-ep,deployment.deployment_name=blue")
    assert "# traffic: blue 10 -> 100" in text
    assert "hello.json, bye.json" in text


def test_dry_run_register_only_standard_flow(tmp_path: Path) -> None:
    spec = _spec(tmp_path, chat_input=None, chat_output=None, chat_history=None, resources=())
    docs = _docs(dry_run_yaml(None, spec))
    assert len(docs) == 1
    (tmp_path / "m.yaml").write_text(docs[0])
    model = load_model(tmp_path / "m.yaml")
    assert model.properties["azureml.promptflow.mode"] == "standard"
    assert not any("chat_" in k for k in model.properties)
    assert model.properties["llmops.resources"] == "[]"


def test_deployment_without_scope_or_options(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    plan = _plan(spec, instance_type=None, request_timeout_ms=None, environment_variables={})
    dep = azureml.deployment_entity(plan, "green", "azureml:chat-model:1")
    assert dep.instance_type == azureml.DEFAULT_INSTANCE_TYPE
    # round 3: no timeout given is not the service's 5 s default but the most a deployment takes
    assert dep.request_settings is not None and dep.request_settings.request_timeout_ms == 180_000
    assert dep.app_insights_enabled is True
    assert dep.environment_variables == {"PROMPTFLOW_RUN_MODE": "serving"}
    assert traffic_steps(plan, "green", None) == [{"green": 100}]
    assert traffic_steps(plan, "green", "blue") == [{"green": 10, "blue": 90}, {"green": 100, "blue": 0}]


# ------------------------------------------------------------------------------------------------ register


def test_register_when_missing_puts_the_model_version(tmp_path: Path, fake: FakeAzureML, ml_client: MLClient,
                                                       no_upload: list[Path]) -> None:
    spec = _spec(tmp_path)
    name, version, created = AzureMLRelease(ml_client).register(spec)
    assert (name, version, created) == ("chat-model", "a1b2c3d4e5f6", True)
    model_path = "/models/chat-model/versions/a1b2c3d4e5f6"
    assert ("GET", model_path) in fake.log
    assert fake.writes() == [("PUT", model_path)]
    assert fake.log.index(("GET", model_path)) < fake.log.index(("PUT", model_path))
    props = fake.models["chat-model:a1b2c3d4e5f6"]["properties"]
    assert props["properties"]["azureml.promptflow.source_flow_id"] == "chat"
    assert props["properties"]["is-promptflow"] == "true"
    assert props["tags"] == spec.tags
    assert props["modelUri"].endswith("/datastores/workspaceblobstore/paths/LocalUpload/fake/chat")
    # the upload is a snapshot (overrides applied), not the user's folder
    assert len(no_upload) == 1 and no_upload[0] != spec.path and no_upload[0].name == "chat"
    assert not no_upload[0].exists()


def test_register_when_present_creates_nothing(tmp_path: Path, fake: FakeAzureML, ml_client: MLClient,
                                              no_upload: list[Path]) -> None:
    spec = _spec(tmp_path)
    _registered(fake, spec)
    assert AzureMLRelease(ml_client).register(spec) == ("chat-model", "a1b2c3d4e5f6", False)
    assert fake.writes() == []
    assert no_upload == []


# ------------------------------------------------------------------------------------------------ resources


def test_check_resources(tmp_path: Path, fake: FakeAzureML, ml_client: MLClient) -> None:
    spec = _spec(tmp_path, resources=(Resource("llm", "aoai", "gpt-4o"), Resource("emb", "search", None),
                                      Resource("py", None, None)))
    release = AzureMLRelease(ml_client)
    fake.connections = {"aoai"}
    with pytest.raises(UsageError) as err:
        release.check_resources(spec)
    assert "'search' used by emb" in str(err.value) and "aoai" not in str(err.value).split(":")[1]
    assert "environment_variables" in str(err.value)
    fake.connections = {"aoai", "search"}
    release.check_resources(spec)
    assert ("GET", "/connections/search") in fake.log
    release.check_resources(spec, {"aoai", "prod-search"}, {"search": "${{azureml://connections/prod-search}}"})
    with pytest.raises(UsageError, match="mapped to 'nope'"):
        release.check_resources(spec, {"aoai", "search"}, {"search": "nope"})


# ------------------------------------------------------------------------------------------------ deploy


def _registered(fake: FakeAzureML, spec: ModelSpec) -> None:
    fake.models[f"{spec.name}:{spec.version}"] = {
        "id": f"{ARM_ID}/models/{spec.name}/versions/{spec.version}", "name": spec.version,
        "properties": {"modelUri": "azureml://datastores/workspaceblobstore/paths/x", "flavors": {},
                       "modelType": "custom_model", "properties": {}, "tags": {}}}


def _serving(fake: FakeAzureML, slot: str) -> None:
    """An endpoint ``ep`` whose ``slot`` takes all traffic."""
    fake.endpoints["chat-ep"] = {"id": f"{ARM_ID}/onlineEndpoints/chat-ep", "name": "chat-ep", "location": "eastus",
                            "identity": {"type": "SystemAssigned"},
                            "properties": {"authMode": "Key", "traffic": {slot: 100}, "provisioningState": "Succeeded",
                                           "scoringUri": SCORING.format("chat-ep")}}
    fake.deployments[f"chat-ep/{slot}"] = {"id": f"{ARM_ID}/onlineEndpoints/ep/deployments/{slot}", "name": slot,
                                      "sku": {"name": "Default", "capacity": 1},
                                      "properties": {"provisioningState": "Succeeded", "endpointComputeType": "Managed",
                                                     "instanceType": "Standard_DS3_v2",
                                                     "scaleSettings": {"scaleType": "Default"}}}


def test_deploy_happy_path(tmp_path: Path, fake: FakeAzureML, ml_client: MLClient) -> None:
    spec = _spec(tmp_path)
    _registered(fake, spec)
    _serving(fake, "blue")
    seen: list[tuple[str, Any]] = []

    def score(slot: str, body: Any) -> tuple[int, Any]:
        seen.append((slot, body))
        return 200, {"answer": "ok"}

    fake.score = score

    result = AzureMLRelease(ml_client).deploy(_plan(spec), spec.version)

    assert result.status == "deployed", result.message
    assert (result.deployment, result.previous, result.traffic) == ("green", "blue", {"green": 100})
    assert [s.passed for s in result.smoke] == [True, True]
    assert result.url == SCORING.format("chat-ep")
    assert seen == [("green", {"question": "hi", "chat_history": []}),
                    ("green", {"question": "bye", "chat_history": []})]
    # the writes, in order: the serving image as an anonymous environment and the new deployment (both by
    # azure-ai-ml's online_deployments.begin_create_or_update), the two scoring calls, then traffic 10 and 100
    assert fake.writes() == [("PUT", ENV_PUT), ("PUT", "/onlineEndpoints/chat-ep/deployments/green"),
                             ("POST", SCORING.format("chat-ep")), ("POST", SCORING.format("chat-ep")),
                             ("PUT", "/onlineEndpoints/chat-ep"), ("PUT", "/onlineEndpoints/chat-ep")]
    assert fake.traffic_puts() == [{"green": 10, "blue": 90}, {"green": 100}]
    assert fake.log.index(("GET", "/onlineEndpoints/chat-ep")) < fake.log.index(
        ("PUT", "/onlineEndpoints/chat-ep/deployments/green"))
    deployment = fake.deployments["chat-ep/green"]
    props = deployment["properties"]
    assert props["model"].endswith("/models/chat-model/versions/a1b2c3d4e5f6")
    assert props["environmentVariables"]["PROMPTFLOW_RUN_MODE"] == "serving"
    assert "deployment.deployment_name=green" in props["environmentVariables"]["PRT_CONFIG_OVERRIDE"]
    assert props["requestSettings"]["requestTimeout"] == "PT1M30S"
    assert deployment["sku"]["capacity"] == 2


def test_deploy_to_new_endpoint(tmp_path: Path, fake: FakeAzureML, ml_client: MLClient) -> None:
    spec = _spec(tmp_path)
    _registered(fake, spec)
    result = AzureMLRelease(ml_client).deploy(_plan(spec, smoke_tests=()), spec.version)
    assert result.status == "deployed", result.message
    assert (result.deployment, result.previous, result.traffic) == ("blue", None, {"blue": 100})
    assert fake.writes() == [("PUT", "/onlineEndpoints/chat-ep"), ("PUT", ENV_PUT),
                             ("PUT", "/onlineEndpoints/chat-ep/deployments/blue"), ("PUT", "/onlineEndpoints/chat-ep")]
    created = fake.bodies[fake.log.index(("PUT", "/onlineEndpoints/chat-ep"))]
    assert created["properties"]["authMode"] == "Key"
    assert created["properties"]["properties"] == {"enforce_access_to_default_secret_stores": "enabled"}
    assert fake.traffic_puts() == [{}, {"blue": 100}]


def test_deploy_failing_smoke_test_rolls_back(tmp_path: Path, fake: FakeAzureML, ml_client: MLClient) -> None:
    spec = _spec(tmp_path)
    _registered(fake, spec)
    _serving(fake, "green")
    fake.score = lambda slot, body: (200, {"answer": "ok"}) if body["question"] == "hi" else (200, {"answer": "no"})

    result = AzureMLRelease(ml_client).deploy(_plan(spec), spec.version)

    assert result.status == "rolled_back"
    assert (result.deployment, result.previous, result.traffic) == ("blue", "green", {"green": 100})
    assert [s.passed for s in result.smoke] == [True, False]
    assert "smoke test bye.json" in (result.message or "") and "left in place" in (result.message or "")
    assert fake.traffic_puts() == []  # the new slot never got traffic
    assert fake.endpoints["chat-ep"]["properties"]["traffic"] == {"green": 100}
    assert "chat-ep/blue" in fake.deployments  # not deleted


def test_deploy_smoke_http_error(tmp_path: Path, fake: FakeAzureML, ml_client: MLClient) -> None:
    spec = _spec(tmp_path)
    _registered(fake, spec)
    _serving(fake, "blue")
    fake.score = lambda slot, body: (424, {"error": {"code": "UserError", "message": "flow failed"}})
    plan = _plan(spec, smoke_tests=(SmokeTest("hello.json", {"question": "hi"}),))
    result = AzureMLRelease(ml_client).deploy(plan, spec.version)
    assert result.status == "rolled_back"
    assert result.smoke[0].error is not None and result.smoke[0].error.startswith("HTTP 424, expected 200")
    assert fake.traffic_puts() == []


def test_deploy_traffic_shift_failure_restores_previous(tmp_path: Path, fake: FakeAzureML,
                                                        ml_client: MLClient) -> None:
    spec = _spec(tmp_path)
    _registered(fake, spec)
    _serving(fake, "blue")
    fake.fail_traffic_at = 100
    result = AzureMLRelease(ml_client).deploy(_plan(spec), spec.version)
    assert result.status == "rolled_back"
    assert result.traffic == {"blue": 100}
    assert "shifting traffic to green failed" in (result.message or "")
    assert fake.traffic_puts() == [{"green": 10, "blue": 90}, {"green": 100}, {"blue": 100}]
    assert fake.endpoints["chat-ep"]["properties"]["traffic"] == {"blue": 100}


def test_deploy_failed_deployment_keeps_traffic(tmp_path: Path, fake: FakeAzureML, ml_client: MLClient) -> None:
    spec = _spec(tmp_path)
    _registered(fake, spec)
    _serving(fake, "blue")
    fake.fail_deployment = True
    result = AzureMLRelease(ml_client).deploy(_plan(spec), spec.version)
    assert result.status == "rolled_back"
    assert "deployment green failed" in (result.message or "") and "image pull failed" in (result.message or "")
    assert result.smoke == [] and fake.traffic_puts() == []


def test_bad_endpoint_name(tmp_path: Path, fake: FakeAzureML, ml_client: MLClient) -> None:
    spec = _spec(tmp_path)
    _registered(fake, spec)
    with pytest.raises(UsageError, match="3 to 32"):
        AzureMLRelease(ml_client).deploy(_plan(spec, endpoint="ep"), spec.version)
    with pytest.raises(UsageError, match="3 to 32"):
        dry_run_yaml(_plan(spec, endpoint="-bad-"), spec)
    assert fake.log == []


def test_connect_sends_nothing() -> None:
    client = azureml.connect(WorkspaceScope(SUB, GROUP, WS), FakeCredential())
    assert AzureMLRelease(client).scope == WorkspaceScope(SUB, GROUP, WS)


def test_deploy_unregistered_model(tmp_path: Path, fake: FakeAzureML, ml_client: MLClient) -> None:
    spec = _spec(tmp_path)
    with pytest.raises(UsageError, match="not registered"):
        AzureMLRelease(ml_client).deploy(_plan(spec), spec.version)
    assert fake.writes() == []


# ------------------------------------------------------------------------------------------------ from the CLI

CHAT_CONFIG = """\
version: 1
connections:
  open_ai_connection:
    type: open_ai
    api_key: ${env:OPENAI_API_KEY}
flows:
  chat:
    path: flows/chat-basic
    data: flows/chat-basic/data.jsonl
    register: {name: chat-basic}
    deploy: {endpoint: chat-basic-ep}
azureml:
  subscription_id: ${env:AZURE_SUBSCRIPTION_ID}
  resource_group: rg-llmops
  workspace: ws-llmops
"""


def test_dry_run_from_the_cli_is_what_deploy_creates(cli: Callable[..., Any], project: Callable[..., Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # chat/chat-basic: `chat_history` carries no is_chat_history, prompt flow still takes it as the history
    import shutil

    proj = project({"llmops.yaml": CHAT_CONFIG}, base=False)
    shutil.copytree(Path(__file__).parents[1] / "kinds" / "data" / "upstream" / "chat-basic",
                    proj.path("flows/chat-basic"))
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a dry run needs no credentials
    result = cli("deploy", "--backend", "azureml", "--dry-run", "--flow", "chat")
    assert result.code == 0, result.err
    model, _, deployment = [yaml.safe_load(d) for d in result.out.split("---\n")]
    assert model["properties"]["azureml.promptflow.mode"] == "chat"
    assert model["properties"]["azureml.promptflow.chat_history"] == "chat_history"
    assert model["properties"]["azureml.promptflow.chat_input"] == "question"
    assert deployment["environment_variables"]["PRT_CONFIG_OVERRIDE"] == (
        f"deployment.subscription_id={SUB},deployment.resource_group={GROUP},deployment.workspace_name={WS},"
        "deployment.endpoint_name=chat-basic-ep,deployment.deployment_name=blue")
    # exactly what deploy would create: the same entity the real deploy builds for that slot and workspace
    spec_env = azureml.deployment_environment_variables(
        DeployPlan(ModelSpec("chat-basic", "1", "chat", proj.path("flows/chat-basic"), None, {}, ()),
                   "chat-basic-ep", None, 1, (100,), ()), "blue", WorkspaceScope(SUB, GROUP, WS))
    assert deployment["environment_variables"] == spec_env


# ------------------------------------------------------------------------------------------------ deploy: settings

UAI = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/flows"


def _settings_plan(tmp_path: Path, **kw: Any) -> DeployPlan:
    spec = _spec(tmp_path)
    return _plan(spec, request_timeout_ms=None, settings=DeploySpec("chat-ep", **kw))


def test_dry_run_shows_every_deploy_setting_and_azure_ai_ml_loads_it(tmp_path: Path) -> None:
    plan = _settings_plan(tmp_path, app_insights=True, worker_num=4, worker_threads=2,
                          probes={"liveness": {"initial_delay": 60, "period": 20},
                                  "readiness": {"failure_threshold": 10}},
                          identity={"type": "user_assigned", "resource_id": UAI, "client_id": "c1d2"})
    (plan.model.path / "requirements.txt").write_text("langchain==0.3.0\n")
    docs = _docs(dry_run_yaml(plan, plan.model, WorkspaceScope(SUB, GROUP, WS), tmp_path / "build"))
    (tmp_path / "ep.yaml").write_text(docs[1])
    (tmp_path / "dep.yaml").write_text(docs[2])
    endpoint = load_online_endpoint(tmp_path / "ep.yaml")
    assert endpoint.identity is not None and endpoint.identity.type == "user_assigned"
    assert endpoint.identity.user_assigned_identities[0].resource_id == UAI
    assert not endpoint.properties  # the secret-store property is for a system-assigned identity only
    deployment = load_online_deployment(tmp_path / "dep.yaml")
    assert deployment.app_insights_enabled is True
    assert deployment.request_settings.request_timeout_ms == 180_000
    assert deployment.request_settings.max_concurrent_requests_per_instance == 8  # workers x threads
    assert (deployment.liveness_probe.initial_delay, deployment.liveness_probe.period) == (60, 20)
    assert deployment.readiness_probe.failure_threshold == 10
    variables = deployment.environment_variables
    assert (variables["PROMPTFLOW_WORKER_NUM"], variables["PROMPTFLOW_WORKER_THREADS"]) == ("4", "2")
    assert variables["UAI_CLIENT_ID"] == "c1d2"
    env = deployment.environment
    assert isinstance(env, Environment) and env.image is None and env.build is not None
    context = Path(env.build.path)
    assert (context / "Dockerfile").read_text().startswith(f"FROM {azureml_settings.PROMPTFLOW_IMAGE}\n")
    assert "pip install -r requirements.txt" in (context / "Dockerfile").read_text()
    assert (context / "requirements.txt").read_text() == "langchain==0.3.0\n"
    assert env.inference_config["scoringRoute"] == {"port": 8080, "path": "/score"}


def test_requirements_named_in_the_flow_yaml_are_built(tmp_path: Path) -> None:
    plan = _settings_plan(tmp_path)
    flow = plan.model.path
    (flow / "deps").mkdir()
    (flow / "deps/reqs.txt").write_text("tiktoken\n")
    (flow / "flow.dag.yaml").write_text((flow / "flow.dag.yaml").read_text()
                                        + "environment:\n  python_requirements_txt: deps/reqs.txt\n")
    dep = azureml.deployment_entity(plan, "blue", "azureml:chat-model:1", None, tmp_path / "b")
    assert isinstance(dep.environment, Environment) and dep.environment.build is not None
    assert (Path(dep.environment.build.path) / "requirements.txt").read_text() == "tiktoken\n"
    (flow / "flow.dag.yaml").write_text((flow / "flow.dag.yaml").read_text().replace("deps/reqs.txt", "../x.txt"))
    with pytest.raises(UsageError, match=r"python_requirements_txt '\.\./x\.txt' is not a file in the flow folder"):
        azureml.deployment_entity(plan, "blue", "azureml:chat-model:1", None, tmp_path / "b")


def test_deploy_sends_the_settings_and_uploads_the_build_context(tmp_path: Path, fake: FakeAzureML,
                                                                 ml_client: MLClient,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []

    def upload(environment: Any, *args: Any, **kwargs: Any) -> Any:
        built.append((Path(environment.build.path) / "requirements.txt").read_text())
        environment.build.path = "azureml://datastores/workspaceblobstore/paths/LocalUpload/fake/build/"
        return environment

    import azure.ai.ml.operations._environment_operations as environments

    monkeypatch.setattr(environments, "_check_and_upload_env_build_context", upload)
    plan = _settings_plan(tmp_path, max_concurrent_requests=3, app_insights=False)
    (plan.model.path / "requirements.txt").write_text("numpy\n")
    _registered(fake, plan.model)
    result = AzureMLRelease(ml_client).deploy(plan, "a1b2c3d4e5f6")
    assert result.status == "deployed", result.message
    assert built == ["numpy\n"]
    sent = next(b for (m, p), b in zip(fake.log, fake.bodies, strict=True)
                if m == "PUT" and p == "/onlineEndpoints/chat-ep/deployments/blue")["properties"]
    assert sent["requestSettings"]["requestTimeout"] == "PT3M"
    assert sent["requestSettings"]["maxConcurrentRequestsPerInstance"] == 3
    assert sent["appInsightsEnabled"] is False
    env_put = next(b for (m, p), b in zip(fake.log, fake.bodies, strict=True)
                   if m == "PUT" and p.startswith("/environments/"))
    assert env_put["properties"]["build"]["contextUri"].endswith("/build/")
    endpoint = next(b for (m, p), b in zip(fake.log, fake.bodies, strict=True)
                    if m == "PUT" and p == "/onlineEndpoints/chat-ep")
    assert endpoint["identity"]["type"].lower().startswith("systemassigned")


def test_two_releases_end_to_end_through_the_real_client(tmp_path: Path, fake: FakeAzureML, ml_client: MLClient,
                                                         no_upload: list[Path]) -> None:
    """Register, deploy to a new endpoint, register a second version, shift to it; a third that fails its smoke
    test rolls back to the second; the deployment settings go with every deployment."""
    release = AzureMLRelease(ml_client)
    settings = DeploySpec("chat-ep", worker_num=2)
    first = _spec(tmp_path)
    assert release.register(first)[2] is True
    assert release.register(first)[2] is False  # registering it again creates nothing
    result = release.deploy(_plan(first, settings=settings), first.version)
    assert (result.status, result.deployment, result.traffic) == ("deployed", "blue", {"blue": 100}), result.message
    second = ModelSpec(**{**first.__dict__, "version": "b2c3d4e5f6a1"})
    assert release.register(second)[2] is True
    result = release.deploy(_plan(second, settings=settings), second.version)
    assert (result.status, result.deployment, result.previous) == ("deployed", "green", "blue"), result.message
    assert {k: v for k, v in fake.endpoints["chat-ep"]["properties"]["traffic"].items() if v} == {"green": 100}
    third = ModelSpec(**{**first.__dict__, "version": "c3d4e5f6a1b2"})
    release.register(third)
    fake.score = lambda slot, body: (500, {"error": {"code": "UserError", "message": "boom"}}) if slot == "blue" \
        else (200, {"answer": "ok"})
    result = release.deploy(_plan(third, settings=settings), third.version)
    assert (result.status, result.deployment, result.traffic) == ("rolled_back", "blue", {"green": 100})
    assert {k: v for k, v in fake.endpoints["chat-ep"]["properties"]["traffic"].items() if v} == {"green": 100}
    for key in ("chat-ep/blue", "chat-ep/green"):
        props = fake.deployments[key]["properties"]
        assert props["environmentVariables"]["PROMPTFLOW_WORKER_NUM"] == "2"
        assert props["requestSettings"]["requestTimeout"] == "PT1M30S" and props["appInsightsEnabled"] is True


def test_a_smoke_answer_with_a_text_error_fails_the_test_not_the_tool(tmp_path: Path, fake: FakeAzureML,
                                                                        ml_client: MLClient) -> None:
    spec = _spec(tmp_path)
    _registered(fake, spec)
    _serving(fake, "blue")
    fake.score = lambda slot, body: (500, {"error": "the flow raised"})
    result = AzureMLRelease(ml_client).deploy(_plan(spec), spec.version)
    assert result.status == "rolled_back" and not result.smoke[0].passed
    assert result.traffic == {"blue": 100}
