"""Register and deploy on an Azure ML workspace: a prompt flow model, a managed online endpoint, blue/green.

Imported only for ``--backend azureml`` (it needs the ``[azure]`` extra). The entity builders are pure and
``dry_run_yaml`` prints exactly what ``register``/``deploy`` would create; ``AzureMLRelease`` acts through an
``MLClient`` its caller constructs, so tests can hand it a client with a fake transport.

Layout follows Microsoft's "deploy a flow to an online endpoint" (CLI/SDK): the flow folder registered as a
custom model with the ``azureml.promptflow.*`` properties, an endpoint with key auth whose identity may read
the workspace's connection secrets, and deployments named ``blue``/``green`` running the prompt flow serving
image with ``PROMPTFLOW_RUN_MODE=serving`` and ``PRT_CONFIG_OVERRIDE`` so they pull connections from the
workspace. A new deployment goes to the idle slot, is smoke-tested directly (not through the endpoint's
traffic), then gets traffic step by step; any failure puts all traffic back on the slot that served before.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from azure.ai.ml import MLClient
from azure.ai.ml.entities import (
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
    OnlineEndpoint,
)
from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from llmops_ci.config import Origin, expand_env
from llmops_ci.core.errors import ServiceError, UsageError
from llmops_ci.engines.base import BackendContext
from llmops_ci.kinds import snapshot_of
from llmops_ci.releases.azureml import settings
from llmops_ci.releases.base import Release
from llmops_ci.releases.bluegreen import Stage, live, roll_out
from llmops_ci.releases.spec import DeployPlan, DeployResult, ModelSpec, SmokeResult, SmokeTest, other_slot
from llmops_ci.results.records import ProviderConnection, resolve_values

log = logging.getLogger("llmops_ci.azureml")

DEFAULT_INSTANCE_TYPE = "Standard_DS3_v2"
SLOTS = ("blue", "green")
_SCHEMAS = {
    "model": "https://azuremlschemas.azureedge.net/latest/model.schema.json",
    "endpoint": "https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json",
    "deployment": "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json",
}
# environment_variables value that points a connection name at another workspace connection
_CONNECTION_REF = re.compile(r"^\$\{\{\s*azureml://connections/([^}\s]+)\s*\}\}$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Azure ML: an endpoint name starts with a letter, has 3 to 32 letters, digits and hyphens, is unique in its region
_ENDPOINT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")


@dataclass(frozen=True)
class WorkspaceScope:
    subscription_id: str
    resource_group: str
    workspace: str


def connect(scope: WorkspaceScope, credential: Any = None) -> MLClient:
    """An MLClient for the workspace: ``DefaultAzureCredential`` (az login, a service principal's AZURE_*
    variables, a managed identity, workload identity in GitHub Actions) unless a credential is given.
    Nothing is sent until the first operation."""
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return MLClient(credential, scope.subscription_id, scope.resource_group, scope.workspace, show_progress=False)


def check_endpoint_name(name: str) -> None:
    if not _ENDPOINT_NAME.match(name):
        raise UsageError(f"endpoint name '{name}': Azure ML wants 3 to 32 letters, digits and hyphens, starting "
                         f"with a letter and not ending with a hyphen (and unique in the region)")


# ---------------------------------------------------------------------------------------------- entities


def model_properties(spec: ModelSpec) -> dict[str, str]:
    """What the studio's endpoint Test tab and prompt flow serving read from a flow registered as a model."""
    props = {"azureml.promptflow.source_flow_id": spec.flow, "is-promptflow": "true",
             "azureml.promptflow.mode": "chat" if spec.chat_input else "standard"}
    if spec.chat_input:
        props["azureml.promptflow.chat_input"] = spec.chat_input
        if spec.chat_output:
            props["azureml.promptflow.chat_output"] = spec.chat_output
        if spec.chat_history:
            props["azureml.promptflow.chat_history"] = spec.chat_history
    props["llmops.resources"] = json.dumps(
        [{"node": r.node, "connection": r.connection, "deployment": r.deployment} for r in spec.resources],
        separators=(",", ":"))
    return props


def model_entity(spec: ModelSpec, path: Path | None = None) -> Model:
    """The flow folder as a custom model; ``path`` is the folder uploaded (default: the flow folder itself)."""
    return Model(name=spec.name, version=spec.version, path=str((path or spec.path).absolute()),
                 type="custom_model", description=spec.description, tags=dict(spec.tags),
                 properties=model_properties(spec))


def endpoint_entity(plan: DeployPlan) -> ManagedOnlineEndpoint:
    # the secret-store property grants a system-assigned identity the connections' secrets; it does not apply to
    # a user-assigned one, which must be granted them beforehand
    return ManagedOnlineEndpoint(name=plan.endpoint, auth_mode="key",
                                 description=f"prompt flow {plan.model.flow} (llmops-ci)",
                                 tags={"llmops.flow": plan.model.flow}, identity=settings.endpoint_identity(plan),
                                 properties={"enforce_access_to_default_secret_stores": "enabled"}
                                 if settings.system_assigned(plan) else {})


def deployment_environment_variables(plan: DeployPlan, slot: str,
                                     scope: WorkspaceScope | None = None) -> dict[str, str]:
    env = {"PROMPTFLOW_RUN_MODE": "serving"}
    if scope is not None:
        env["PRT_CONFIG_OVERRIDE"] = ",".join([
            f"deployment.subscription_id={scope.subscription_id}",
            f"deployment.resource_group={scope.resource_group}",
            f"deployment.workspace_name={scope.workspace}",
            f"deployment.endpoint_name={plan.endpoint}",
            f"deployment.deployment_name={slot}"])
    env.update(settings.worker_environment(plan))
    env.update({str(k): str(v) for k, v in plan.environment_variables.items()})
    return env


def deployment_entity(plan: DeployPlan, slot: str, model_id: str, scope: WorkspaceScope | None = None,
                      build_root: Path | None = None) -> ManagedOnlineDeployment:
    """``model_id``: a registered model, ``azureml:<name>:<version>``; ``build_root``: where the build context of
    a flow with requirements is written (without one, the plain runtime image)."""
    return ManagedOnlineDeployment(
        name=slot, endpoint_name=plan.endpoint, model=model_id,
        environment=settings.serving_environment(plan.model, build_root),
        instance_type=plan.instance_type or DEFAULT_INSTANCE_TYPE, instance_count=plan.instance_count,
        environment_variables=deployment_environment_variables(plan, slot, scope),
        request_settings=settings.request_settings(plan), app_insights_enabled=settings.settings_of(plan).app_insights,
        liveness_probe=settings.probe(plan, "liveness"), readiness_probe=settings.probe(plan, "readiness"),
        tags={"llmops.model": f"{plan.model.name}:{plan.model.version}"})


def model_ref(name: str, version: str) -> str:
    return f"azureml:{name}:{version}"


def _entity_yaml(entity: Model | ManagedOnlineEndpoint | ManagedOnlineDeployment, schema: str) -> str:
    data = json.loads(json.dumps(entity._to_dict()))  # OrderedDicts to plain data
    if not data.get("traffic"):
        data.pop("traffic", None)
    if not data.get("mirror_traffic"):
        data.pop("mirror_traffic", None)
    if isinstance(data.get("identity"), dict):  # principal/client ids are the service's to fill in, never null
        data["identity"] = {k: [{n: x for n, x in i.items() if x is not None} for i in v] if isinstance(v, list)
                            else v for k, v in data["identity"].items() if v is not None}
    return yaml.safe_dump({"$schema": schema, **data}, sort_keys=False, allow_unicode=True)


def dry_run_yaml(plan: DeployPlan | None, spec: ModelSpec, scope: WorkspaceScope | None = None,
                 build_root: Path | None = None) -> str:
    """The entities register (and deploy, with a plan) would create, as YAML documents ``az ml`` and
    azure-ai-ml's ``load_*`` accept; the traffic plan closes as a comment."""
    docs = ["# model (registered unless this name and version exists; the flow folder is uploaded with\n"
            "# additional_includes merged, connection overrides and the variant applied)\n"
            + _entity_yaml(model_entity(spec), _SCHEMAS["model"])]
    if plan is not None:
        check_endpoint_name(plan.endpoint)
        slot = SLOTS[0]
        docs.append("# endpoint (created if missing)\n" + _entity_yaml(endpoint_entity(plan), _SCHEMAS["endpoint"]))
        docs.append(f"# deployment to the idle slot ({slot} on a new endpoint; the slot without traffic otherwise)\n"
                    + _entity_yaml(deployment_entity(plan, slot, model_ref(spec.name, spec.version), scope,
                                                     build_root), _SCHEMAS["deployment"]))
        steps = " -> ".join(str(p) for p in (plan.traffic or (100,)))
        tests = ", ".join(t.name for t in plan.smoke_tests) or "none"
        docs[-1] += (f"# smoke tests against {slot} directly: {tests}\n"
                     f"# traffic: {slot} {steps} (the rest stays on the slot serving before; any failure puts\n"
                     f"# all traffic back on it and leaves {slot} in place for debugging)\n")
    return "---\n".join(docs)


# ---------------------------------------------------------------------------------------------- release


@contextmanager
def _service(what: str) -> Iterator[None]:
    """Azure failures other than the expected ones become ServiceError (exit 3) saying what was being done."""
    try:
        yield
    except ClientAuthenticationError as exc:
        raise ServiceError(f"Azure ML: {what}: not authenticated ({_short(exc)}); run 'az login' or set "
                           f"AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET") from None
    except (AzureError, OSError) as exc:
        raise ServiceError(f"Azure ML: {what}: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    """The first line of what went wrong; azure-ai-ml wraps validation errors in a long colored text."""
    inner = getattr(exc, "exc_value", None)
    if isinstance(inner, BaseException) and inner is not exc:
        exc = inner
    text = _ANSI.sub("", str(getattr(exc, "message", None) or exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def _serving_slot(traffic: dict[str, int] | None) -> str | None:
    live = [(int(p), name) for name, p in (traffic or {}).items() if int(p) > 0]
    return max(live)[1] if live else None


class AzureMLRelease:
    def __init__(self, ml_client: MLClient) -> None:
        self.ml = ml_client

    @property
    def scope(self) -> WorkspaceScope | None:
        sub, group, ws = self.ml.subscription_id, self.ml.resource_group_name, self.ml.workspace_name
        return WorkspaceScope(sub, group, ws) if sub and group and ws else None

    # -------------------------------------------------------------------------------------- register

    def register(self, spec: ModelSpec) -> tuple[str, str, bool]:
        """(name, version, created): the version is the content hash, so an existing one is left alone."""
        with _service(f"looking up model {spec.name}:{spec.version}"):
            try:
                self.ml.models.get(spec.name, spec.version)
                log.info("model %s:%s is already registered", spec.name, spec.version)
                return spec.name, spec.version, False
            except ResourceNotFoundError:
                pass
        with tempfile.TemporaryDirectory(prefix="llmops-model-") as tmp, \
                _service(f"registering model {spec.name}:{spec.version}"):
            folder = snapshot_of(spec.path, Path(tmp) / spec.path.name, variant=spec.variant,
                                 overrides=spec.connections).folder
            created = self.ml.models.create_or_update(model_entity(spec, folder))
        log.info("registered model %s:%s", created.name or spec.name, created.version or spec.version)
        return created.name or spec.name, created.version or spec.version, True

    def check_resources(self, spec: ModelSpec, workspace_connections: set[str] | None = None,
                        environment_variables: dict[str, str] | None = None) -> None:
        """Every connection the flow's nodes use must exist in the workspace, or be mapped to one that does by
        a deployment environment variable (``<connection>: <other>`` or ``${{azureml://connections/<other>}}``).
        ``workspace_connections``: the names, when the caller listed them already."""
        mapping = environment_variables or {}
        needed: dict[str, list[str]] = {}
        for res in spec.resources:
            if res.connection:
                needed.setdefault(res.connection, []).append(res.node)
        missing = []
        for name, nodes in sorted(needed.items()):
            value = str(mapping.get(name, name))
            ref = _CONNECTION_REF.match(value)
            target = ref.group(1) if ref else value
            if not self._connection_exists(target, workspace_connections):
                via = f" (mapped to '{target}')" if target != name else ""
                missing.append(f"'{name}'{via} used by {', '.join(nodes)}")
        if missing:
            ws = self.ml.workspace_name or "the workspace"
            raise UsageError(
                f"model {spec.name}:{spec.version}: these connections are not in workspace {ws}: "
                f"{'; '.join(missing)}. Create them in the workspace (Azure ML studio > Connections, or "
                f"'az ml connection create'), or map each to an existing connection with a deployment "
                f"environment variable in llmops.yaml: deploy: environment_variables: {{<connection>: <existing>}}")

    def _connection_exists(self, name: str, known: set[str] | None) -> bool:
        if known is not None:
            return name in known
        with _service(f"looking up connection {name}"):
            try:
                self.ml.connections.get(name)
            except ResourceNotFoundError:
                return False
        return True

    # ---------------------------------------------------------------------------------------- deploy

    def deploy(self, plan: DeployPlan, model_version: str) -> DeployResult:
        """Blue/green: the idle slot gets the model, is smoke-tested directly, then takes traffic step by step.
        ``rolled_back`` (traffic on the slot that served before) when the deployment, a smoke test or a traffic
        step fails; the failed deployment stays for its logs."""
        model = plan.model
        check_endpoint_name(plan.endpoint)
        with _service(f"looking up model {model.name}:{model_version}"):
            try:
                self.ml.models.get(model.name, model_version)
            except ResourceNotFoundError:
                raise UsageError(f"model {model.name}:{model_version} is not registered in workspace "
                                 f"{self.ml.workspace_name}; run 'llmops-ci register --backend azureml "
                                 f"--flow {model.flow}' first") from None
        return roll_out(plan, _Slots(self, plan, self._endpoint(plan), model_version))

    def _endpoint(self, plan: DeployPlan) -> OnlineEndpoint:
        with _service(f"looking up endpoint {plan.endpoint}"):
            try:
                return self.ml.online_endpoints.get(plan.endpoint)
            except ResourceNotFoundError:
                pass
        log.info("creating endpoint %s", plan.endpoint)
        with _service(f"creating endpoint {plan.endpoint}"):
            self.ml.online_endpoints.begin_create_or_update(endpoint_entity(plan)).result()
            return self.ml.online_endpoints.get(plan.endpoint)

    def _put_traffic(self, endpoint: OnlineEndpoint, traffic: dict[str, int]) -> None:
        endpoint.traffic = dict(traffic)
        self.ml.online_endpoints.begin_create_or_update(endpoint).result()

    def _set_traffic(self, endpoint: OnlineEndpoint, traffic: dict[str, int], what: str) -> None:
        with _service(f"{what} (check the endpoint's traffic in the studio)"):
            self._put_traffic(endpoint, traffic)

    def _smoke(self, endpoint: str, slot: str, test: SmokeTest) -> SmokeResult:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="llmops-smoke-") as tmp:
            request_file = Path(tmp) / "request.json"
            request_file.write_text(json.dumps(test.request), encoding="utf-8")
            try:
                text = self.ml.online_endpoints.invoke(endpoint_name=endpoint, deployment_name=slot,
                                                       request_file=str(request_file))
                status, body = 200, _json_or_text(text)
            except ClientAuthenticationError as exc:
                raise ServiceError(f"Azure ML: invoking {endpoint}/{slot}: not authenticated ({_short(exc)})") \
                    from None
            except HttpResponseError as exc:
                status = int(exc.status_code or 0)
                body = _json_or_text(exc.response.text()) if exc.response is not None else _short(exc)
            # azure-ai-ml raises MlException for a non-JSON error, and AttributeError for {"error": "<text>"}
            # (its _endpoint_utils reads error.message of every error body)
            except (AzureError, OSError, ValueError, AttributeError) as exc:
                return SmokeResult(test.name, False, f"{type(exc).__name__}: {_short(exc)}",
                                   round(time.monotonic() - started, 3))
        error = test.check(status, body)
        return SmokeResult(test.name, error is None, error, round(time.monotonic() - started, 3))


class _Slots:
    """``bluegreen.Slots`` of a managed online endpoint: its deployments named blue and green."""

    routed = True

    def __init__(self, release: AzureMLRelease, plan: DeployPlan, endpoint: OnlineEndpoint, version: str) -> None:
        self.release, self.plan, self.endpoint, self.version = release, plan, endpoint, version
        self.previous = _serving_slot(endpoint.traffic)
        self.slot = other_slot(self.previous)
        self.traffic = live(endpoint.traffic or {})
        self.url: str | None = endpoint.scoring_uri
        if self.previous and (endpoint.traffic or {}).get(self.slot):
            # a half-finished earlier rollout: the slot about to be replaced must not serve while it is
            log.info("%s: %s still has traffic; moving it all to %s first", plan.endpoint, self.slot, self.previous)
            release._set_traffic(endpoint, {self.previous: 100, self.slot: 0}, f"moving all traffic to {self.previous}")
            self.traffic = {self.previous: 100}

    def start(self) -> str | None:
        model, slot = self.plan.model, self.slot
        log.info("%s: deploying %s:%s to slot %s", self.plan.endpoint, model.name, self.version, slot)
        build = Path(tempfile.mkdtemp(prefix="llmops-build-"))
        try:
            deployment = deployment_entity(self.plan, slot, model_ref(model.name, self.version), self.release.scope,
                                           build)
            self.release.ml.online_deployments.begin_create_or_update(deployment).result()
        except ClientAuthenticationError as exc:
            raise ServiceError(f"Azure ML: creating deployment {slot}: not authenticated ({_short(exc)})") from None
        except (AzureError, OSError) as exc:  # provisioning failed: the image, the model, quota, the container
            return f"deployment {slot} failed: {_short(exc)}"
        finally:
            shutil.rmtree(build, ignore_errors=True)
        return None

    def smoke(self, test: SmokeTest) -> SmokeResult:
        return self.release._smoke(self.plan.endpoint, self.slot, test)

    def shift(self, traffic: dict[str, int]) -> str | None:
        try:
            self.release._put_traffic(self.endpoint, traffic)
        except (AzureError, OSError) as exc:
            return f"shifting traffic to {self.slot} failed: {_short(exc)}"
        return None

    def promote(self) -> str | None:
        return f"{self.slot} serves {self.plan.model.name}:{self.version}" + (
            f"; {self.previous} stays deployed with no traffic (the rollback target)" if self.previous else "")

    def roll_back(self, failure: str, stage: Stage, traffic: dict[str, int]) -> str:
        previous, slot, endpoint = self.previous, self.slot, self.plan.endpoint
        logs = f"'az ml online-deployment get-logs --name {slot} --endpoint-name {endpoint}'"
        if stage == "start":
            return f"{failure}; {_where_traffic(previous)}; see {logs}"
        if traffic != ({previous: 100} if previous else {}):
            restore = {previous: 100, slot: 0} if previous else {slot: 0}
            self.release._set_traffic(self.endpoint, restore,
                                      f"rolling back traffic to {previous or 'nothing'} after: {failure}")
        return f"{failure}; {_where_traffic(previous)}; deployment {slot} is left in place for debugging ({logs})"

    def close(self, deployed: bool) -> None:
        return None


def _json_or_text(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _where_traffic(previous: str | None) -> str:
    return f"traffic stays on {previous}" if previous else "nothing serves on the endpoint"


class ProjectRelease(Release):
    """The ``Release`` of ``--backend azureml``: the workspace named by llmops.yaml's ``azureml:`` block,
    reached only when something is registered or deployed (dry runs need no credentials)."""

    name = "azureml"
    engines = frozenset({"promptflow"})  # what prompt flow's serving image serves

    def __init__(self, ctx: BackendContext) -> None:
        self.ctx = ctx
        self._release: AzureMLRelease | None = None

    def _connected(self) -> AzureMLRelease:
        if self._release is None:
            config = self.ctx.project.config
            if config.azureml is None:
                raise UsageError(f"{config.doc.display}: --backend azureml needs an 'azureml:' block "
                                 "(subscription_id, resource_group, workspace)")
            values = resolve_values(Origin(config.doc, ("azureml",)), {
                "subscription_id": config.azureml.subscription_id, "resource_group": config.azureml.resource_group,
                "workspace": config.azureml.workspace}, self.ctx.environ)
            self._release = AzureMLRelease(connect(WorkspaceScope(**values)))
        return self._release

    def register(self, spec: ModelSpec) -> tuple[str, str, bool]:
        return self._connected().register(spec)

    def deploy(self, plan: DeployPlan, connections: tuple[ProviderConnection, ...], keep: bool) -> DeployResult:
        release = self._connected()
        release.check_resources(plan.model, environment_variables=plan.environment_variables)
        return release.deploy(plan, plan.model.version)

    def dry_run_model(self, spec: ModelSpec) -> str:
        return dry_run_yaml(None, spec)

    def dry_run_plan(self, plan: DeployPlan) -> str:
        # a flow with requirements: the build context is written under the state dir, so the YAML loads as shown
        return dry_run_yaml(plan, plan.model, self._dry_run_scope(), self.ctx.state_dir / "azureml-build")

    def _dry_run_scope(self) -> WorkspaceScope:
        """The workspace as llmops.yaml names it, without credentials: a ``${env:NAME}`` that is not set stays
        as written (the deployment's PRT_CONFIG_OVERRIDE names the workspace, so the dry run shows it)."""
        config = self.ctx.project.config
        if config.azureml is None:
            return WorkspaceScope("<subscription_id>", "<resource_group>", "<workspace>")
        values = {k: expand_env(getattr(config.azureml, k), self.ctx.environ)
                  for k in ("subscription_id", "resource_group", "workspace")}
        return WorkspaceScope(**values)
