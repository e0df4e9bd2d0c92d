"""``--backend databricks``: MLflow agents in the Unity Catalog registry, served by Databricks model serving.

Deploys go through ``databricks-sdk``'s WorkspaceClient, not ``databricks.agents.deploy`` (which moves
all traffic at once): the new version joins the endpoint as a second served entity, takes the first
traffic share, is smoke tested on its own (``/serving-endpoints/<name>/served-models/<entity>/invocations``),
then takes each next share, each step waiting until the endpoint is ready again. A failed step or
smoke test puts all traffic back on the entity that served before. An update refused because
another one is in progress (409 ResourceConflict) waits and tries again, a bounded number of times.
Credentials come from the environment the SDK reads (PAT, OAuth, OIDC workload identity in CI).

What an endpoint carries follows ``databricks-agents`` 1.13's ``deploy()``: ``ENABLE_MLFLOW_TRACING`` and
``RETURN_REQUEST_ID_IN_RESPONSE`` (``deploy: tracing``), ``MLFLOW_EXPERIMENT_ID`` on the served entity and the
endpoint tag ``MONITOR_EXPERIMENT_ID``, no scale to zero (``deploy: scale_to_zero``), an AI Gateway inference
table (``deploy: inference_table``). Entities already on the endpoint are re-sent with every field they have
(``ServedEntityInput`` read from what the endpoint reports), so a traffic shift never reconfigures them; a
rollback re-sends the endpoint's config as it was. ``deploy: keep_previous`` keeps that many earlier
versions at 0 %. Versions are found by their content alias (``llmops_<hash>``), not by tags: Unity
Catalog's search carries none.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from llmops_ci.config import Config, DeploySpec, FlowSpec
from llmops_ci.core.errors import ServiceError, UsageError
from llmops_ci.engines.mlflow.engine import MlflowChild, snapshot
from llmops_ci.releases.base import Release
from llmops_ci.releases.bluegreen import smoke_failure
from llmops_ci.releases.mlflow_logging import (
    CHALLENGER,
    CHAMPION,
    agent_of,
    content_alias,
    content_key,
    dry_run_model,
    log_request,
)
from llmops_ci.releases.spec import DeployPlan, DeployResult, ModelSpec, SmokeResult, SmokeTest
from llmops_ci.results.records import ProviderConnection

if TYPE_CHECKING:
    from llmops_ci.engines.base import BackendContext

log = logging.getLogger("llmops_ci.databricks")
T = TypeVar("T")
UC_NAME = re.compile(r"[^.\s]+\.[^.\s]+\.[^.\s]+")
HASH_TAG = "llmops.content_hash"
AUTH_HINT = ("set DATABRICKS_HOST and DATABRICKS_TOKEN (a personal access token), or DATABRICKS_CLIENT_ID and "
             "DATABRICKS_CLIENT_SECRET (a service principal), or OIDC in CI (DATABRICKS_AUTH_TYPE=github-oidc or "
             "azure-devops-oidc with DATABRICKS_CLIENT_ID)")


def experiment_path(flow: str) -> str:
    return f"/Shared/llmops-ci/{flow}"


def entity_name(model: str, version: str) -> str:
    """The served entity's name on the endpoint: the model's last name part and its version."""
    short = re.sub(r"[^A-Za-z0-9_-]", "-", model.split(".")[-1])[:50]
    return f"{short}-{version}"


def endpoint_config(entities: list[dict[str, Any]], routes: dict[str, int]) -> dict[str, Any]:
    """The JSON body of a config update (``PUT /api/2.0/serving-endpoints/<name>/config``)."""
    return {"served_entities": entities,
            "traffic_config": {"routes": [{"served_entity_name": n, "traffic_percentage": p}
                                          for n, p in routes.items()]}}


TRACING_ENV = {"ENABLE_MLFLOW_TRACING": "true", "RETURN_REQUEST_ID_IN_RESPONSE": "true"}  # as agents.deploy()
MONITOR_TAG = "MONITOR_EXPERIMENT_ID"


def settings_of(plan: DeployPlan) -> DeploySpec:
    return plan.settings or DeploySpec(plan.endpoint)


def served_entity(model: str, version: str, plan: DeployPlan, experiment_id: str | None = None) -> dict[str, Any]:
    """The new version as a ``ServedEntityInput``: agents.deploy()'s settings, the deploy: keys over them."""
    settings = settings_of(plan)
    entity: dict[str, Any] = {"name": entity_name(model, version), "entity_name": model, "entity_version": version,
                              "workload_size": plan.instance_type or "Small",
                              "scale_to_zero_enabled": settings.scale_to_zero}
    if settings.instance_profile_arn:
        entity["instance_profile_arn"] = settings.instance_profile_arn
    env = {**(TRACING_ENV if settings.tracing else {}),
           **({"MLFLOW_EXPERIMENT_ID": experiment_id} if experiment_id else {}), **plan.environment_variables}
    if env:
        entity["environment_vars"] = dict(env)
    return entity


def endpoint_extras(model: str, plan: DeployPlan, experiment_id: str | None) -> dict[str, Any]:
    """What a new endpoint gets besides its config: the AI Gateway inference table (in the model's catalog and
    schema, prefixed with its name, as agents.deploy()) and the monitoring tag."""
    extras: dict[str, Any] = {}
    if settings_of(plan).inference_table:
        catalog, schema, name = model.split(".", 2)
        extras["ai_gateway"] = {"inference_table_config": {"enabled": True, "catalog_name": catalog,
                                                           "schema_name": schema, "table_name_prefix": name}}
    if experiment_id:
        extras["tags"] = [{"key": MONITOR_TAG, "value": experiment_id}]
    return extras


@dataclass(frozen=True)
class Serving:
    """An endpoint's config as it is: each entity as the ``ServedEntityInput`` that re-creates it, and the routes."""

    entities: tuple[dict[str, Any], ...]
    routes: dict[str, int]

    @property
    def main(self) -> dict[str, Any]:
        return max(self.entities, key=lambda e: self.routes.get(e["name"], 0))

    def config(self) -> dict[str, Any]:
        return endpoint_config(list(self.entities), {e["name"]: self.routes.get(e["name"], 0) for e in self.entities})


def _version_order(entity: dict[str, Any]) -> int:
    version = str(entity.get("entity_version") or "")
    return int(version) if version.isdigit() else -1


def plan_steps(new: dict[str, Any], serving: Serving | None, traffic: tuple[int, ...], keep_previous: int = 0
               ) -> list[dict[str, Any]]:
    """Each config the deploy submits: the new entity beside everything already there while traffic moves
    (other entities at 0 %), then the new one with ``keep_previous`` earlier ones (newest first) at 0 %."""
    if serving is None or not serving.entities:
        return [endpoint_config([new], {new["name"]: 100})]
    previous = serving.main
    others = sorted((e for e in serving.entities if e["name"] not in (previous["name"], new["name"])),
                    key=_version_order, reverse=True)
    steps = [endpoint_config([new, previous, *others], {new["name"]: p, previous["name"]: 100 - p,
                                                        **{o["name"]: 0 for o in others}}) for p in traffic]
    kept = [previous, *others][:keep_previous]
    final = endpoint_config([new, *kept], {new["name"]: 100, **{k["name"]: 0 for k in kept}})
    if final != steps[-1]:
        steps.append(final)
    return steps


class DatabricksRelease(Release):
    """``client`` builds the WorkspaceClient on first use (a dry run never builds one)."""

    name = "databricks"
    engines = frozenset({"mlflow_agent"})

    def __init__(self, state_dir: Path, flows: Mapping[str, FlowSpec], environ: Mapping[str, str],
                 host: str | None = None, *, client: Callable[[], Any] | None = None, poll_s: float = 10.0,
                 ready_timeout_s: float = 3600.0, conflict_retries: int = 6) -> None:
        self.state_dir, self.flows, self.environ = state_dir.absolute(), dict(flows), dict(environ)
        self.host = host or self.environ.get("DATABRICKS_HOST")
        self._factory = client or self._default_client
        self._client: Any = None
        self.poll_s, self.ready_timeout_s, self.conflict_retries = poll_s, ready_timeout_s, conflict_retries

    @classmethod
    def for_config(cls, state_dir: Path, config: Config, environ: Mapping[str, str]) -> DatabricksRelease:
        return cls(state_dir, config.flows, environ, config.databricks.host if config.databricks else None)

    def _default_client(self) -> Any:
        from databricks.sdk import WorkspaceClient

        return WorkspaceClient(host=self.host) if self.host else WorkspaceClient()

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = self._factory()
            except ValueError as exc:  # the SDK's "cannot configure default credentials"
                raise UsageError(f"Databricks: {exc}; {AUTH_HINT}") from None
        return self._client

    # -- register -------------------------------------------------------------------------------------------
    def register(self, spec: ModelSpec) -> tuple[str, str, bool]:
        flow, agent = agent_of(self.flows, spec)
        if not UC_NAME.fullmatch(spec.name):
            raise UsageError(f"flow '{spec.flow}': register.name '{spec.name}' must be a Unity Catalog name, "
                             "catalog.schema.model")
        child = MlflowChild(self.state_dir, self.environ)
        work = child.root / "work" / f"uc-{spec.flow}-{spec.version}"
        env = {"MLFLOW_TRACKING_URI": "databricks", "MLFLOW_REGISTRY_URI": "databricks-uc",
               **({"DATABRICKS_HOST": self.host} if self.host else {})}
        try:
            code = snapshot(agent, flow.path, work)
            request = {**log_request(flow, agent, spec, code), "artifacts": None,
                       "experiment": experiment_path(spec.flow)}
            out = child.call("log", request, name=f"uc-register-{spec.flow}", extra_env=env)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if out.get("status") != "Completed":
            raise ServiceError(f"registering {spec.name} in Unity Catalog failed: {out.get('error')}")
        return spec.name, str(out["version"]), bool(out["created"])

    def find_version(self, spec: ModelSpec, scan: int = 50) -> str | None:
        """The Unity Catalog version holding this content: by its content alias (databricks-sdk's
        ``model_versions.get_by_alias``); a version registered before aliases were set is found by reading the
        newest ``scan`` versions one by one over MLflow's UC API (a get carries tags, a search none)."""
        from databricks.sdk.errors import NotFound

        key = content_key(spec, agent_of(self.flows, spec)[1])
        try:
            info = self._api(lambda: self.client.model_versions.get_by_alias(spec.name, content_alias(key)))
            return str(info.version)
        except NotFound:
            pass
        try:
            found = self._api(lambda: self.client.api_client.do(
                "GET", "/api/2.0/mlflow/unity-catalog/model-versions/search",
                query={"filter": f"name='{spec.name}'", "max_results": 1000}))
        except NotFound:  # no such model
            return None
        numbers = sorted((int(v["version"]) for v in found.get("model_versions", [])), reverse=True)
        for number in numbers[:scan]:
            got = self._api(lambda n=number: self.client.api_client.do(  # type: ignore[misc]
                "GET", "/api/2.0/mlflow/unity-catalog/model-versions/get",
                query={"name": spec.name, "version": str(n)}))
            tags = got.get("model_version", {}).get("tags") or []
            if any(t.get("key") == HASH_TAG and t.get("value") == key for t in tags):
                return str(number)
        return None

    def experiment_id(self, plan: DeployPlan) -> str | None:
        """``deploy: experiment_id``, else the experiment register logged into (``/Shared/llmops-ci/<flow>``)."""
        from databricks.sdk.errors import NotFound

        settings = settings_of(plan)
        if settings.experiment_id:
            return settings.experiment_id
        name = experiment_path(plan.model.flow)
        try:
            found = self._api(lambda: self.client.experiments.get_by_name(name))
        except NotFound:
            found = None
        if found is None or found.experiment is None:
            log.warning("%s: no experiment %s, so the endpoint's traces are not logged to MLflow; register first or "
                        "set deploy: experiment_id", plan.endpoint, name)
            return None
        return str(found.experiment.experiment_id)

    # -- deploy ------------------------------------------------------------------------------------------------
    def deploy(self, plan: DeployPlan, connections: tuple[ProviderConnection, ...], keep: bool) -> DeployResult:
        from databricks.sdk.errors import NotFound

        model = plan.model
        version = self.find_version(model)
        if version is None:
            raise UsageError(f"{model.name} (content_hash {model.version}) is not in Unity Catalog; run "
                             f"'llmops-ci register --backend databricks --flow {model.flow}' first")
        experiment = self.experiment_id(plan)
        new = served_entity(model.name, version, plan, experiment)
        try:
            current = self._api(lambda: self.client.serving_endpoints.get(plan.endpoint))
        except NotFound:
            current = None
        serving = _serving(current) if current is not None else None
        previous = serving.main if serving is not None else None
        result = DeployResult(plan.endpoint, new["name"], previous["name"] if previous else None, "rolled_back",
                              {previous["name"]: 100} if previous else {},
                              url=f"{self.host or ''}/serving-endpoints/{plan.endpoint}/invocations")
        if current is not None and experiment:
            self._tag(plan.endpoint, current, experiment)
        if previous is not None and previous["name"] == new["name"]:
            result.previous = None
            steps: list[dict[str, Any]] = []
        else:
            steps = plan_steps(new, serving, plan.traffic, settings_of(plan).keep_previous)
        extras = endpoint_extras(model.name, plan, experiment)
        for i, config in enumerate(steps):
            routes = {r["served_entity_name"]: r["traffic_percentage"] for r in config["traffic_config"]["routes"]}
            log.info("%s: %s", plan.endpoint, ", ".join(f"{k} {v}%" for k, v in routes.items()))
            self._submit(partial(self._create, plan.endpoint, config, extras) if i == 0 and current is None else
                         partial(self._update, plan.endpoint, config))
            failure = self._wait_ready(plan.endpoint)
            if failure is None and i == 0:
                result.smoke = [self._smoke(plan.endpoint, new["name"], t) for t in plan.smoke_tests]
                failure = smoke_failure(result.smoke)
            if failure is not None:
                result.message = self._rollback(plan.endpoint, serving, failure)
                return result
            result.traffic = {k: v for k, v in routes.items() if v}
        if not steps:
            result.smoke = [self._smoke(plan.endpoint, new["name"], t) for t in plan.smoke_tests]
            failure = smoke_failure(result.smoke)
            if failure is not None:
                result.message = f"{failure}; {new['name']} already served and still does"
                result.traffic = {new["name"]: 100}
                return result
        self._api(lambda: self.client.registered_models.set_alias(model.name, CHAMPION, int(version)))
        result.traffic, result.status = {new["name"]: 100}, "deployed"
        return result

    def _tag(self, endpoint: str, current: Any, experiment: str) -> None:
        """As agents.deploy(): an endpoint without the monitoring tag gets it; one a user set is left alone."""
        from databricks.sdk.service.serving import EndpointTag

        if not any(t.key == MONITOR_TAG for t in current.tags or []):
            self._api(lambda: self.client.serving_endpoints.patch(
                endpoint, add_tags=[EndpointTag(MONITOR_TAG, experiment)]))

    def _rollback(self, endpoint: str, serving: Serving | None, failure: str) -> str:
        """Re-send the endpoint's config as it was before this deploy: every entity with all its fields."""
        if serving is None:
            return (f"{failure}; nothing served before this deploy, so there is nothing to put traffic back on: fix "
                    f"the agent and deploy again, or delete the endpoint {endpoint}")
        previous = serving.main["name"]
        log.warning("%s: %s; putting all traffic back on %s", endpoint, failure, previous)
        self._submit(partial(self._update, endpoint, serving.config()))
        after = self._wait_ready(endpoint)
        tail = f"all traffic is back on {previous}" if after is None else (
            f"putting traffic back on {previous} failed too ({after}); check the endpoint in the workspace")
        return f"{failure}; {tail}; the alias {CHAMPION} is unchanged"

    def _create(self, endpoint: str, config: dict[str, Any], extras: dict[str, Any]) -> None:
        from databricks.sdk.service.serving import AiGatewayConfig, EndpointTag

        gateway = AiGatewayConfig.from_dict(extras["ai_gateway"]) if extras.get("ai_gateway") else None
        tags = [EndpointTag.from_dict(t) for t in extras.get("tags", [])] or None
        self.client.serving_endpoints.create(endpoint, config=_core(config), ai_gateway=gateway, tags=tags)

    def _update(self, endpoint: str, config: dict[str, Any]) -> None:
        core = _core(config)
        self.client.serving_endpoints.update_config(endpoint, served_entities=core.served_entities,
                                                    traffic_config=core.traffic_config)

    def _submit(self, call: Callable[[], Any]) -> None:
        """Submit a config; 409 (another update in progress) waits for it and tries again, a bounded number of times."""
        from databricks.sdk.errors import ResourceConflict

        for attempt in range(self.conflict_retries + 1):
            try:
                self._api(call)
                return
            except ResourceConflict as exc:
                if attempt == self.conflict_retries:
                    raise ServiceError(f"Databricks: the endpoint is still being updated after "
                                       f"{self.conflict_retries + 1} tries ({exc}); wait for that update to finish "
                                       "and deploy again") from None
                log.info("endpoint busy (%s); waiting before try %d", exc, attempt + 2)
                time.sleep(self.poll_s)

    def _wait_ready(self, endpoint: str) -> str | None:
        """None once the endpoint is ready with no update in progress, else why not."""
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            state = self._api(lambda: self.client.serving_endpoints.get(endpoint)).state
            update = getattr(state.config_update, "value", None) if state else None
            if update in ("UPDATE_FAILED", "UPDATE_CANCELED"):
                return f"the endpoint update ended {update}; see the served entity's events in the workspace"
            if update == "NOT_UPDATING" and getattr(state.ready, "value", None) == "READY":
                return None
            if time.monotonic() > deadline:
                return f"the endpoint was not ready after {self.ready_timeout_s:.0f} s"
            time.sleep(self.poll_s)

    def _smoke(self, endpoint: str, entity: str, test: SmokeTest) -> SmokeResult:
        from databricks.sdk.errors import DatabricksError

        started = time.monotonic()
        try:
            # not through _api: an error answer is this smoke test's result, not the deploy's
            body: Any = self.client.api_client.do(
                "POST", f"/serving-endpoints/{endpoint}/served-models/{entity}/invocations", body=test.request)
            status = 200
        except DatabricksError as exc:
            status, body = _status(exc), str(exc)
        error = test.check(status, body)
        return SmokeResult(test.name, error is None, error, round(time.monotonic() - started, 3))

    def _api(self, call: Callable[[], T]) -> T:
        """One SDK call; rejected credentials are bad input (exit 2), an unreachable workspace a service failure."""
        import requests
        from databricks.sdk.errors import (
            BadRequest,
            DatabricksError,
            NotFound,
            PermissionDenied,
            ResourceConflict,
            Unauthenticated,
        )

        try:
            return call()
        except (NotFound, ResourceConflict):
            raise  # the callers decide
        except (Unauthenticated, PermissionDenied) as exc:
            raise UsageError(f"Databricks at {self.host or 'the configured host'} refused the credentials "
                             f"({type(exc).__name__}: {exc}); {AUTH_HINT}") from None
        except BadRequest as exc:  # InvalidParameterValue among them: what we sent came from llmops.yaml
            raise UsageError(f"Databricks rejected the request: {exc}; check the flow's deploy: settings "
                             "(instance_type is the workload size: Small, Medium or Large)") from None
        except DatabricksError as exc:
            raise ServiceError(f"Databricks failed: {type(exc).__name__}: {exc}") from None
        except (requests.ConnectionError, requests.Timeout, TimeoutError) as exc:
            raise ServiceError(f"Databricks at {self.host} is not reachable: {exc}") from None

    # -- dry runs -------------------------------------------------------------------------------------------------
    def dry_run_model(self, spec: ModelSpec) -> str:
        return dry_run_model(self.flows, spec, "databricks-uc (Unity Catalog)")

    def dry_run_plan(self, plan: DeployPlan) -> str:
        _, agent = agent_of(self.flows, plan.model)
        key = content_key(plan.model, agent)
        settings = settings_of(plan)
        experiment = settings.experiment_id or f"<id of the experiment {experiment_path(plan.model.flow)}>"
        new = served_entity(plan.model.name, f"<the version aliased {content_alias(key)}>", plan, experiment)
        new["name"] = entity_name(plan.model.name, "<version>")
        previous = {"name": "<the entity serving now>", "entity_name": plan.model.name,
                    "entity_version": "<its version>", "...": "every other field it has now, unchanged"}
        serving = Serving((previous,), {previous["name"]: 100})
        doc = {"endpoint": plan.endpoint, "model": plan.model.name,
               "resources": [f"{r.type}: {r.name}" + (" (on behalf of the user)" if r.on_behalf_of_user else "")
                             for r in agent.resources],
               "if_new": {"POST /api/2.0/serving-endpoints": {
                   "name": plan.endpoint, "config": plan_steps(new, None, plan.traffic)[0],
                   **endpoint_extras(plan.model.name, plan, experiment)}},
               "if_serving": [{f"PUT /api/2.0/serving-endpoints/{plan.endpoint}/config": c}
                              for c in plan_steps(new, serving, plan.traffic, settings.keep_previous)],
               "smoke_tests": [f"POST /serving-endpoints/{plan.endpoint}/served-models/{new['name']}/invocations "
                               f"{t.name}" for t in plan.smoke_tests],
               "on_success": f"alias {CHAMPION} -> the version (register set {CHALLENGER})",
               "on_failure": "the endpoint's config as it was before, every entity and route re-sent"}
        if not agent.resources:
            doc["resources"] = "none declared: the agent gets no automatic authentication passthrough"
        return yaml.safe_dump(json.loads(json.dumps(doc)), sort_keys=False)


def _core(config: dict[str, Any]) -> Any:
    from databricks.sdk.service.serving import EndpointCoreConfigInput

    return EndpointCoreConfigInput.from_dict(config)


def _serving(endpoint: Any) -> Serving | None:
    """The endpoint's config as inputs: each ``ServedEntityOutput`` read into a ``ServedEntityInput`` keeps every
    field an update takes (instance profile, provisioned throughput and concurrency, burst scaling, environment,
    workload type, ...) and drops only what the service reports about itself (state, creator, timestamps)."""
    from databricks.sdk.service.serving import ServedEntityInput

    config = endpoint.config
    if config is None or not config.served_entities:
        return None
    routes = {(r.served_entity_name or r.served_model_name): r.traffic_percentage or 0
              for r in (config.traffic_config.routes if config.traffic_config and config.traffic_config.routes else [])}
    entities = tuple(ServedEntityInput.from_dict(e.as_dict()).as_dict() for e in config.served_entities)
    return Serving(entities, routes)


def _status(exc: Exception) -> int:
    codes = {"NotFound": 404, "BadRequest": 400, "InternalError": 500, "TooManyRequests": 429,
             "TemporarilyUnavailable": 503, "DeadlineExceeded": 504, "InvalidParameterValue": 400}
    for cls in type(exc).__mro__:
        if cls.__name__ in codes:
            return codes[cls.__name__]
    return 500


def from_context(ctx: BackendContext) -> DatabricksRelease:
    """The factory for ``RELEASES["databricks"]``; builds no client (a dry run needs no credentials)."""
    return DatabricksRelease.for_config(ctx.state_dir, ctx.project.config, ctx.environ)
