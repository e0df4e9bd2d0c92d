"""Register and deploy MLflow agents without a cloud: the sqlite registry and MLflow's scoring server on 127.0.0.1.

``register`` logs the agent from its code (the declared resources written into MLmodel) and
registers it; the version carries the content hash as a tag, so registering unchanged content
again reuses its version. The new version gets the alias ``challenger``; a successful deploy moves
``champion`` to it. ``deploy`` serves the version in the idle slot (blue/green) with
``mlflow models serve --env-manager local``, smoke tests ``/invocations`` and only then switches.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from llmops_ci.config import Config, FlowSpec
from llmops_ci.core.errors import CheckFailed, UsageError
from llmops_ci.engines.mlflow.engine import (
    MlflowChild,
    data_example,
    llm_routes,
    mlflow_environment,
    model_config_path,
    snapshot,
)
from llmops_ci.engines.promptflow.executor import reap
from llmops_ci.kinds.mlflow.kind import resources_for_mlflow
from llmops_ci.kinds.mlflow.spec import MlflowAgentSpec
from llmops_ci.llm.cache import CacheSettings
from llmops_ci.releases.slots import free_port, smoke, wait_healthy
from llmops_ci.releases.spec import DeployPlan, DeployResult, ModelSpec, other_slot
from llmops_ci.results.records import ProviderConnection, cache_settings
from llmops_ci.results.state import write_json_atomic

if TYPE_CHECKING:
    from llmops_ci.engines.base import BackendContext

log = logging.getLogger("llmops_ci.mlflow_release")
START_TIMEOUT_S = 120
CHALLENGER, CHAMPION = "challenger", "champion"


def agent_of(flows: Mapping[str, FlowSpec], spec: ModelSpec) -> tuple[FlowSpec, MlflowAgentSpec]:
    flow = flows.get(spec.flow)
    agent = flow.block(MlflowAgentSpec) if flow is not None else None
    if flow is None or agent is None:
        raise UsageError(f"flow '{spec.flow}' is not an MLflow agent (no mlflow_agent: block in llmops.yaml)")
    return flow, agent


def content_key(spec: ModelSpec, agent: MlflowAgentSpec) -> str:
    """The version's content tag: ``spec.version``, which for an agent already covers what logging writes into
    MLmodel from the config (release.content_hash), so the log, a dry run and deploy name one value."""
    return spec.version


def content_alias(key: str) -> str:
    """The alias naming the version that holds this content (``content_key``): a Unity Catalog search returns
    no tags, but a version is one GET away by its alias, on every MLflow registry and in databricks-sdk."""
    return f"llmops_{key}"


def mlmodel_resources(agent: MlflowAgentSpec) -> dict[str, Any]:
    """The resources block as MLflow writes it into MLmodel (``resources:`` or ``auth_policy:``)."""
    databricks: dict[str, list[dict[str, Any]]] = {}
    for res in agent.resources:
        item: dict[str, Any] = {"name": res.name}
        if res.on_behalf_of_user:
            item["on_behalf_of_user"] = True
        databricks.setdefault(res.type, []).append(item)
    block = {"api_version": "1", "databricks": databricks}
    if agent.auth_policy:
        return {"auth_policy": {"system_auth_policy": {"resources": block},
                                "user_auth_policy": {"api_scopes": list(agent.api_scopes)}}}
    return {"resources": block}


def log_request(flow: FlowSpec, agent: MlflowAgentSpec, spec: ModelSpec, code: Path) -> dict[str, Any]:
    """What the runner's ``log`` action needs; the same for the local and the Unity Catalog registry."""
    return {"code": str(code), "interface": agent.interface, "pip_requirements": list(agent.pip_requirements),
            "resources": [list(r) for r in resources_for_mlflow(agent)],
            "auth_policy": {"api_scopes": list(agent.api_scopes)} if agent.auth_policy else None,
            "input_example": data_example(flow.data, agent.interface), "model_config": model_config_path(code),
            "register_name": spec.name, "content_hash": content_key(spec, agent), "alias": CHALLENGER,
            "content_alias": content_alias(content_key(spec, agent)),
            "tags": spec.tags, "version_tags": spec.tags, "run_name": f"register-{spec.flow}-{spec.version}",
            "experiment": f"llmops-ci/{spec.flow}"}


def dry_run_model(flows: Mapping[str, FlowSpec], spec: ModelSpec, registry: str) -> str:
    _, agent = agent_of(flows, spec)
    doc = {"registry": registry, "name": spec.name, "content_hash": content_key(spec, agent), "flow": spec.flow,
           "log_model": {"python_model": str(agent.code), "pip_requirements": list(agent.pip_requirements),
                         **mlmodel_resources(agent)},
           "mlflow_resources": [f"{cls}({arg}={name!r})" for cls, arg, name, _ in resources_for_mlflow(agent)],
           "aliases": [CHALLENGER, content_alias(content_key(spec, agent)),
                       f"{CHAMPION} (after a successful deploy)"], "tags": spec.tags}
    if spec.description:
        doc["description"] = spec.description
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


class MlflowRelease:
    """The ``local`` release for MLflow agents (Release shape). ``flows``: the config's flows by name."""

    name = "local"

    def __init__(self, state_dir: Path, flows: Mapping[str, FlowSpec], environ: Mapping[str, str],
                 caches: Mapping[str, CacheSettings] | None = None) -> None:
        """``caches``: per flow, the LLM cassette that logging (it predicts once) and smoke tests go through."""
        self.state_dir, self.flows, self.environ = state_dir.absolute(), dict(flows), dict(environ)
        self.caches = dict(caches or {})
        self.child = MlflowChild(self.state_dir, self.environ)

    @classmethod
    def for_config(cls, state_dir: Path, config: Config, environ: Mapping[str, str],
                   llm_cache: str | None = None) -> MlflowRelease:
        """``llm_cache``: --llm-cache (overrides llm_cache.mode in llmops.yaml)."""
        caches = {name: c for name in config.flows if (c := cache_settings(config, name, llm_cache)) is not None}
        return cls(state_dir, config.flows, environ, caches)

    def _call(self, action: str, request: dict[str, Any], name: str, env: Mapping[str, str] | None = None
              ) -> dict[str, Any]:
        outcome = self.child.call(action, request, name=name, extra_env=env)
        if outcome.get("status") != "Completed":
            raise CheckFailed(f"MLflow {action} failed: {outcome.get('error')}")
        return outcome

    def register(self, spec: ModelSpec) -> tuple[str, str, bool]:
        flow, agent = agent_of(self.flows, spec)
        work = self.child.root / "work" / f"register-{spec.flow}-{spec.version}"
        try:
            code = snapshot(agent, flow.path, work)
            with llm_routes(self.caches.get(spec.flow), self.environ) as (routes, _):
                out = self._call("log", log_request(flow, agent, spec, code), f"register-{spec.flow}", routes)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.info("%s: version %s (content_hash %s) %s, alias %s", spec.name, out["version"], spec.version,
                 "registered" if out["created"] else "already registered", CHALLENGER)
        return spec.name, str(out["version"]), bool(out["created"])

    def find_version(self, spec: ModelSpec) -> str | None:
        _, agent = agent_of(self.flows, spec)
        key = content_key(spec, agent)
        out = self._call("find", {"name": spec.name, "content_hash": key, "content_alias": content_alias(key)},
                         f"find-{spec.flow}")
        return str(out["version"]) if out.get("version") is not None else None

    def endpoint_state(self, endpoint: str) -> dict[str, Any]:
        path = self.state_dir / "endpoints" / f"{endpoint}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"serving": None, "slots": {}}

    def deploy(self, plan: DeployPlan, connections: tuple[ProviderConnection, ...], keep: bool) -> DeployResult:
        # a server kept running (--keep) outlives the proxy, so it calls the real endpoints
        cache = None if keep else self.caches.get(plan.model.flow)
        with llm_routes(cache, self.environ) as (routes, _):
            return self._deploy(plan, keep, routes)

    def _deploy(self, plan: DeployPlan, keep: bool, routes: dict[str, str]) -> DeployResult:
        model = plan.model
        version = self.find_version(model)
        if version is None:
            raise UsageError(f"{model.name} (content_hash {model.version}) is not in the MLflow registry "
                             f"{self.child.root / 'mlflow.db'}; run 'llmops-ci register --flow {model.flow}' first")
        state = self.endpoint_state(plan.endpoint)
        previous = state.get("serving")
        slot = other_slot(previous)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        uri = f"models:/{model.name}/{version}"
        log.info("%s: serving %s in slot %s (%s)", plan.endpoint, uri, slot, url)
        proc = self._serve(uri, port, {**plan.environment_variables, **routes}, f"{plan.endpoint}-{slot}")
        result = DeployResult(plan.endpoint, slot, previous, "rolled_back", {previous: 100} if previous else {},
                              url=url)
        try:
            failure = wait_healthy(url, proc, path="/ping", server="the scoring server", timeout=START_TIMEOUT_S)
            if failure is None:
                result.smoke = [smoke(f"{url}/invocations", t, plan.request_timeout_ms) for t in plan.smoke_tests]
                failed = [s for s in result.smoke if not s.passed]
                if failed:
                    failure = "; ".join(f"smoke test {s.name}: {s.error}" for s in failed)
            if failure is not None:
                result.message = (f"{failure}; {'traffic stays on ' + previous if previous else 'nothing was serving'}"
                                  f", {slot} does not serve; the alias {CHAMPION} is unchanged")
                return result
            for percent in plan.traffic:
                result.traffic = {slot: percent, **({previous: 100 - percent} if previous else {})}
                log.info("%s: traffic %s", plan.endpoint, ", ".join(f"{k} {v}%" for k, v in result.traffic.items()))
            self._call("alias", {"name": model.name, "version": version, "alias": CHAMPION}, f"alias-{model.flow}")
            result.traffic, result.status = {slot: 100}, "deployed"
            state["slots"][slot] = {"model": model.name, "version": version, "content_hash": model.version,
                                    "deployed_at": time.time()}
            state["serving"] = slot
            write_json_atomic(self.state_dir / "endpoints" / f"{plan.endpoint}.json", state)
            return result
        finally:
            if keep and result.status == "deployed":
                log.info("%s: %s keeps serving at %s/invocations (--keep); stop it with: kill %d", plan.endpoint,
                         slot, url, proc.pid)
            else:
                reap(proc)

    def _serve(self, uri: str, port: int, env: dict[str, str], name: str) -> subprocess.Popen[str]:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"serve-{name}.log").open("w", encoding="utf-8") as log_file:
            return subprocess.Popen(
                [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                 "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                stdout=log_file, stderr=subprocess.STDOUT, cwd=self.child.root, text=True, start_new_session=True,
                env=mlflow_environment(self.state_dir, self.environ, env))

    def dry_run_model(self, spec: ModelSpec) -> str:
        return dry_run_model(self.flows, spec, f"sqlite {self.child.root / 'mlflow.db'}")

    def dry_run_plan(self, plan: DeployPlan) -> str:
        state = self.endpoint_state(plan.endpoint)
        slot = other_slot(state.get("serving"))
        doc = {"endpoint": plan.endpoint, "slot": slot, "serving_now": state.get("serving"),
               "model": f"models:/{plan.model.name}/<the version tagged llmops.content_hash="
                        f"{content_key(plan.model, agent_of(self.flows, plan.model)[1])}>",
               "command": "mlflow models serve -m <model> --env-manager local -h 127.0.0.1 -p <free port> -w 1",
               "traffic": list(plan.traffic), "smoke_tests": [t.name for t in plan.smoke_tests],
               "on_success": f"alias {CHAMPION} -> the version", "environment_variables": sorted(
                   plan.environment_variables)}
        return yaml.safe_dump(doc, sort_keys=False)


def from_context(ctx: BackendContext) -> MlflowRelease:
    """The factory for ``RELEASES["local"]`` when the flow is an MLflow agent."""
    return MlflowRelease.for_config(ctx.state_dir, ctx.project.config, ctx.environ)
