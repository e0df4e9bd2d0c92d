"""A Databricks workspace API fake on 127.0.0.1 for the real ``databricks-sdk`` WorkspaceClient (stdlib only).

Serves what a deploy of an agent touches: the host-metadata probe (``/.well-known/databricks-config``),
model serving endpoints (create, get, update config, patch tags, query one served entity), Unity Catalog
model versions and aliases both as MLflow's UC client calls them (``/api/2.0/mlflow/unity-catalog/...``,
the messages of MLflow's ``databricks_uc_registry_messages.proto``) and as databricks-sdk calls them
(``/api/2.1/unity-catalog/models/...``, ``ModelVersionInfo``/``RegisteredModelAlias``), and
``experiments/get-by-name``. As on a real workspace, a model-version *search* carries no tags and no
aliases (MLflow's ``model_version_search_from_uc_proto`` sets both empty; ``ModelVersionInfo`` has no
tags field): only a get of one version, or of an alias, shows them. Updates take ``update_polls`` GETs to
finish; a served entity whose version is in ``failing_versions`` makes its update fail; an update
while another is in progress answers 409 RESOURCE_CONFLICT, and ``conflicts`` more are injected on
demand. A bearer token other than ``token`` answers 401.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


def echo_agent(entity: str, body: dict[str, Any]) -> tuple[int, Any]:
    text = json.dumps(body.get("input") or body.get("messages"))
    return 200, {"object": "response", "output": [{"type": "message", "role": "assistant", "id": "m1",
                                                   "content": [{"type": "output_text", "text": f"{entity}: {text}"}]}]}


@dataclass
class FakeDatabricks:
    token: str = "dapi-test-token"
    update_polls: int = 2
    failing_versions: set[str] = field(default_factory=set)
    conflicts: int = 0  # 409s to answer on the next config updates, whatever the state
    answer: Callable[[str, dict[str, Any]], tuple[int, Any]] = echo_agent
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # UC name -> versions
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)  # UC name -> alias -> version
    experiments: dict[str, str] = field(default_factory=dict)  # experiment path -> id
    files: dict[str, bytes] = field(default_factory=dict)  # Files API path -> content (a version's artifacts)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    _pending: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # name -> (polls left, config)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeDatabricks:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                fake.handle(self, "GET")

            def do_POST(self) -> None:
                fake.handle(self, "POST")

            def do_PUT(self) -> None:
                fake.handle(self, "PUT")

            def do_PATCH(self) -> None:
                fake.handle(self, "PATCH")

            def do_DELETE(self) -> None:
                fake.handle(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def add_version(self, name: str, version: str, content_hash: str, *, alias: bool = True) -> None:
        """A registered version as llmops-ci's register leaves it: the content tag and (unless ``alias`` is
        False, as versions registered by older releases) the content alias ``llmops_<hash>``."""
        self.model_versions.setdefault(name, []).append(
            {"name": name, "version": version, "status": "READY",
             "tags": [{"key": "llmops.content_hash", "value": content_hash}]})
        if alias:
            self.aliases.setdefault(name, {})[f"llmops_{content_hash}"] = version

    def _version(self, name: str, version: str) -> dict[str, Any] | None:
        return next((v for v in self.model_versions.get(name, []) if v["version"] == str(version)), None)

    def _mlflow_version(self, name: str, version: str) -> tuple[int, Any]:
        """MLflow UC ``GetModelVersion``/``GetModelVersionByAlias`` response: ``{"model_version": ModelVersion}``
        with tags and aliases (``RegisteredModelAlias{alias, version}``)."""
        found = self._version(name, version)
        if found is None:
            return 404, self._error("RESOURCE_DOES_NOT_EXIST", f"Model version {name}/{version} does not exist.")
        aliases = [{"alias": a, "version": v} for a, v in self.aliases.get(name, {}).items() if v == found["version"]]
        return 200, {"model_version": {**copy.deepcopy(found), "aliases": aliases}}

    def _sdk_version(self, name: str, version: str) -> dict[str, Any]:
        """databricks-sdk ``catalog.ModelVersionInfo`` (no tags field; version is an integer)."""
        catalog, schema, model = name.split(".", 2)
        aliases = [{"alias_name": a, "version_num": int(v)} for a, v in self.aliases.get(name, {}).items()
                   if v == str(version)]
        return {"catalog_name": catalog, "schema_name": schema, "model_name": model, "version": int(version),
                "status": "READY", "aliases": aliases, "storage_location": f"s3://bucket/models/{name}/{version}"}

    # -- one request ------------------------------------------------------------------------------------
    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _error(code: str, message: str) -> dict[str, Any]:
        return {"error_code": code, "message": message}

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        path, query = url.path, parse_qs(url.query)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        if path.startswith("/api/2.0/fs/"):  # the Files API carries file bytes, not JSON
            body: Any = raw
        else:
            body = json.loads(raw or b"{}")
        with self._lock:
            self.requests.append((method, path, body if not isinstance(body, bytes) else {"bytes": len(body)}))
        if path == "/.well-known/databricks-config":
            return self._send(handler, 200, {"oidc_endpoint": f"{self.url}/oidc", "workspace_id": "1234"})
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(handler, 401, self._error("UNAUTHENTICATED", "Invalid access token."))
        with self._lock:
            status, payload = self._route(method, path, query, body)
        self._send(handler, status, payload)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:3] == ["api", "2.0", "serving-endpoints"]:
            return self._serving(method, parts[3:], body)
        if parts[:1] == ["serving-endpoints"] and len(parts) == 5 and parts[2] == "served-models":
            endpoint = self.endpoints.get(parts[1])
            names = [e["name"] for e in (endpoint or {}).get("config", {}).get("served_entities", [])]
            if endpoint is None or parts[3] not in names:
                return 404, self._error("RESOURCE_DOES_NOT_EXIST", f"served model {parts[3]} not found")
            return self.answer(parts[3], body)
        one = {k: v[0] for k, v in query.items()}
        if path.startswith("/api/2.0/mlflow/unity-catalog/") or path.startswith("/api/2.0/fs/"):
            registered = self._register(method, path, one, body)
            if registered is not None:
                return registered
        if path == "/api/2.0/mlflow/unity-catalog/model-versions/search":
            name = one.get("filter", "").split("=", 1)[-1].strip().strip("'\"")
            if name not in self.model_versions:
                return 404, self._error("RESOURCE_DOES_NOT_EXIST", f"Registered model {name} does not exist.")
            return 200, {"model_versions": [{k: v for k, v in mv.items() if k != "tags"}
                                            for mv in self.model_versions[name]]}
        if path == "/api/2.0/mlflow/unity-catalog/registered-models/get":  # {"registered_model": RegisteredModel}
            name = one.get("name", "")
            if name not in self.model_versions:
                return 404, self._error("RESOURCE_DOES_NOT_EXIST", f"Registered model {name} does not exist.")
            return 200, {"registered_model": {"name": name, "aliases": [
                {"alias": a, "version": v} for a, v in self.aliases.get(name, {}).items()]}}
        if path == "/api/2.0/mlflow/unity-catalog/model-versions/get":
            return self._mlflow_version(one.get("name", ""), one.get("version", ""))
        if path == "/api/2.0/mlflow/unity-catalog/registered-models/alias":
            if method == "GET":
                name, alias = one.get("name", ""), one.get("alias", "")
                if alias not in self.aliases.get(name, {}):
                    return 404, self._error("RESOURCE_DOES_NOT_EXIST", f"Alias {alias} of {name} does not exist.")
                return self._mlflow_version(name, self.aliases[name][alias])
            if method == "POST":
                if self._version(body.get("name", ""), body.get("version", "")) is None:
                    return 404, self._error("RESOURCE_DOES_NOT_EXIST", "no such model version")
                self.aliases.setdefault(body["name"], {})[body["alias"]] = str(body["version"])
                return 200, {}
        if parts[:4] == ["api", "2.1", "unity-catalog", "models"] and len(parts) == 7 and parts[5] == "aliases":
            name, alias = parts[4], parts[6]
            if method == "GET":
                if alias not in self.aliases.get(name, {}):
                    return 404, self._error("RESOURCE_DOES_NOT_EXIST", f"Alias {alias} of {name} does not exist.")
                return 200, self._sdk_version(name, self.aliases[name][alias])
            if self._version(name, str(body.get("version_num"))) is None:
                return 404, self._error("RESOURCE_DOES_NOT_EXIST", "no such model version")
            self.aliases.setdefault(name, {})[alias] = str(body.get("version_num"))
            return 200, {"alias_name": alias, "version_num": body.get("version_num")}
        if path == "/api/2.0/mlflow/experiments/get-by-name":
            exp = self.experiments.get(one.get("experiment_name", ""))
            if exp is None:
                return 404, self._error("RESOURCE_DOES_NOT_EXIST", "Could not find experiment")
            return 200, {"experiment": {"experiment_id": exp, "name": one["experiment_name"]}}
        return 404, self._error("ENDPOINT_NOT_FOUND", f"no API at {method} {path}")

    def _register(self, method: str, path: str, one: dict[str, str], body: Any) -> tuple[int, Any] | None:
        """A new version, as MLflow's UC client makes one (``_create_and_finalize_model_version``): create the
        registered model (RESOURCE_ALREADY_EXISTS the second time, which MLflow accepts), create the version
        (PENDING_REGISTRATION, with its storage location), upload its files through the Files API (databricks-sdk
        ``files.upload`` to ``/Models/<catalog>/<schema>/<model>/<version>/...``, as MLflow's
        ``DatabricksSDKModelsArtifactRepository`` does when the workspace says it is enabled), then finalize."""
        uc = "/api/2.0/mlflow/unity-catalog/"
        if path == uc + "registered-models:is-databricks-sdk-models-artifact-repository-enabled":
            return 200, {"is_databricks_sdk_models_artifact_repository_enabled": True}
        if (method, path) == ("POST", uc + "registered-models/create"):
            if body["name"] in self.model_versions:
                return 400, self._error("RESOURCE_ALREADY_EXISTS", f"Registered model {body['name']} already exists.")
            self.model_versions[body["name"]] = []
            return 200, {"registered_model": {"name": body["name"]}}
        if (method, path) == ("POST", uc + "model-versions/create"):
            name = body["name"]
            if name not in self.model_versions:
                return 404, self._error("RESOURCE_DOES_NOT_EXIST", f"Registered model {name} does not exist.")
            version = str(len(self.model_versions[name]) + 1)
            self.model_versions[name].append(
                {"name": name, "version": version, "status": "PENDING_REGISTRATION", "source": body.get("source"),
                 "run_id": body.get("run_id", ""), "tags": list(body.get("tags") or []),
                 "storage_location": f"s3://fake-bucket/models/{name}/{version}"})
            return 200, {"model_version": copy.deepcopy(self.model_versions[name][-1])}
        if (method, path) == ("POST", uc + "model-versions/finalize"):
            found = self._version(body["name"], body["version"])
            if found is None:
                return 404, self._error("RESOURCE_DOES_NOT_EXIST", "no such model version")
            found["status"] = "READY"
            return 200, {"model_version": copy.deepcopy(found)}
        if (method, path) == ("POST", uc + "model-versions/set-tag"):
            found = self._version(body["name"], body["version"])
            if found is None:
                return 404, self._error("RESOURCE_DOES_NOT_EXIST", "no such model version")
            found["tags"] = [t for t in found["tags"] if t["key"] != body["key"]] + [
                {"key": body["key"], "value": body["value"]}]
            return 200, {}
        if path.startswith("/api/2.0/fs/files/Models/") and method == "PUT":
            self.files[path[len("/api/2.0/fs/files"):]] = body
            return 200, {}
        if path.startswith("/api/2.0/fs/directories/"):
            folder = path[len("/api/2.0/fs/directories"):].rstrip("/") + "/"
            if any(f.startswith(folder) for f in self.files):
                return 200, {}
            return 404, self._error("NOT_FOUND", f"directory {folder} does not exist")
        return None

    def _serving(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        invalid = self._invalid(body.get("config", body) if isinstance(body, dict) else {})
        if method in ("POST", "PUT") and invalid:
            return 400, self._error("INVALID_PARAMETER_VALUE", invalid)
        if method == "POST" and not rest:
            name = body["name"]
            if name in self.endpoints:
                return 400, self._error("RESOURCE_ALREADY_EXISTS", f"endpoint {name} exists")
            self.endpoints[name] = {"name": name, "id": f"id-{name}", "config": {"served_entities": [],
                                                                                 "traffic_config": {"routes": []}},
                                    "state": {"ready": "NOT_READY", "config_update": "IN_PROGRESS"},
                                    "tags": copy.deepcopy(body.get("tags") or [])}
            if body.get("ai_gateway"):  # ServingEndpointDetailed.ai_gateway (AiGatewayConfig)
                self.endpoints[name]["ai_gateway"] = copy.deepcopy(body["ai_gateway"])
            self._start_update(name, body.get("config") or {})
            return 200, self._view(name)
        if not rest or rest[0] not in self.endpoints:
            return 404, self._error("RESOURCE_DOES_NOT_EXIST", f"Endpoint with name '{rest[0] if rest else ''}' "
                                                                "does not exist.")
        name = rest[0]
        if method == "GET" and len(rest) == 1:
            self._tick(name)
            return 200, self._view(name)
        if method == "PUT" and rest[1:] == ["config"]:
            if self.conflicts > 0 or name in self._pending:
                self.conflicts = max(0, self.conflicts - 1)
                return 409, self._error("RESOURCE_CONFLICT", f"Endpoint {name} is currently being updated.")
            self._start_update(name, body)
            return 200, self._view(name)
        if method == "PATCH" and rest[1:] == ["tags"]:  # PatchServingEndpointTags -> EndpointTags
            drop = set(body.get("delete_tags") or [])
            tags = [t for t in self.endpoints[name]["tags"] if t["key"] not in drop]
            for tag in body.get("add_tags") or []:
                tags = [t for t in tags if t["key"] != tag["key"]] + [tag]
            self.endpoints[name]["tags"] = tags
            return 200, {"tags": copy.deepcopy(tags)}
        if method == "DELETE" and len(rest) == 1:
            del self.endpoints[name]
            return 200, {}
        return 404, self._error("ENDPOINT_NOT_FOUND", f"no API at {method} {'/'.join(rest)}")

    @staticmethod
    def _invalid(config: dict[str, Any]) -> str | None:
        entities = config.get("served_entities") or []
        if len(entities) > 15:  # the service's limit, quoted by databricks-agents' deploy()
            return "served_models cannot contain more than 15 elements"
        names = [e.get("name") for e in entities]
        if len(set(names)) != len(names):
            return "served entity names must be unique"
        routes = (config.get("traffic_config") or {}).get("routes") or []
        if routes and sum(r.get("traffic_percentage", 0) for r in routes) != 100:
            return "traffic percentages must add up to 100"
        for entity in entities:
            if entity.get("workload_size") not in (None, "Small", "Medium", "Large"):
                return f"Invalid workload size {entity.get('workload_size')}; use Small, Medium or Large"
        return None

    def _start_update(self, name: str, config: dict[str, Any]) -> None:
        config = {"served_entities": copy.deepcopy(config.get("served_entities") or []),
                  "traffic_config": copy.deepcopy(config.get("traffic_config") or {"routes": []})}
        self._pending[name] = (self.update_polls, config)
        self.endpoints[name]["state"]["config_update"] = "IN_PROGRESS"
        self.endpoints[name]["pending_config"] = config

    def _tick(self, name: str) -> None:
        if name not in self._pending:
            return
        left, config = self._pending[name]
        if left > 0:
            self._pending[name] = (left - 1, config)
            return
        del self._pending[name]
        endpoint = self.endpoints[name]
        endpoint.pop("pending_config", None)
        if any(str(e.get("entity_version")) in self.failing_versions for e in config["served_entities"]):
            endpoint["state"]["config_update"] = "UPDATE_FAILED"
            return
        for entity in config["served_entities"]:  # output-only fields of ServedEntityOutput
            entity["state"] = {"deployment": "DEPLOYMENT_READY"}
            entity.setdefault("creator", "ci@example.com")
            entity.setdefault("creation_timestamp", 1700000000000)
        endpoint["config"] = config
        endpoint["state"] = {"ready": "READY", "config_update": "NOT_UPDATING"}

    def _view(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.endpoints[name])

    def routes(self, name: str) -> dict[str, int]:
        return {r.get("served_entity_name") or r.get("served_model_name"): r["traffic_percentage"]
                for r in self.endpoints[name]["config"]["traffic_config"]["routes"]}
