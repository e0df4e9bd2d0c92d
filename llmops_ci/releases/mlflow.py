"""Register and deploy MLflow agents without a cloud: the sqlite registry and MLflow's scoring server on 127.0.0.1.

``register`` logs the agent from its code (the declared resources written into MLmodel) and
registers it; the version carries the content hash as a tag, so registering unchanged content
again reuses its version. The new version gets the alias ``challenger``; a successful deploy moves
``champion`` to it. ``deploy`` serves the version in the idle slot (blue/green) with
``mlflow models serve --env-manager local``, smoke tests ``/invocations`` and only then switches.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from llmops_ci.config import Config, FlowSpec
from llmops_ci.core.errors import CheckFailed, UsageError
from llmops_ci.engines.mlflow.engine import MlflowChild, llm_routes, mlflow_environment, snapshot
from llmops_ci.llm.cassette import CacheSettings
from llmops_ci.releases.base import Release
from llmops_ci.releases.bluegreen import roll_out
from llmops_ci.releases.mlflow_logging import (
    CHALLENGER,
    CHAMPION,
    agent_of,
    content_alias,
    content_key,
    dry_run_model,
    log_request,
)
from llmops_ci.releases.slots import ServedSlots, Server, endpoint_state
from llmops_ci.releases.spec import DeployPlan, DeployResult, ModelSpec, other_slot
from llmops_ci.results.records import ProviderConnection, cache_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmops_ci.engines.base import BackendContext

log = logging.getLogger("llmops_ci.mlflow_release")
SERVER = Server("the scoring server", "/ping", "/invocations", timeout=120)


class _AliasedSlots(ServedSlots):
    """A local slot whose promotion first moves the registry's ``champion`` alias to the version it serves."""

    def __init__(self, *args: Any, alias: Callable[[], object], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alias = alias

    def promote(self) -> str | None:
        self.alias()
        return super().promote()


class MlflowRelease(Release):
    """The ``local`` release for MLflow agents (Release shape). ``flows``: the config's flows by name."""

    name = "local"
    engines = frozenset({"mlflow_agent"})

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
        return endpoint_state(self.state_dir, endpoint)

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
        uri = f"models:/{model.name}/{version}"
        env = {**plan.environment_variables, **routes}

        def start(port: int, name: str) -> tuple[subprocess.Popen[str], None]:
            return self._serve(uri, port, env, name), None

        def alias() -> object:
            return self._call("alias", {"name": model.name, "version": version, "alias": CHAMPION},
                              f"alias-{model.flow}")

        slots = _AliasedSlots(self.state_dir, plan, SERVER, start,
                              {"model": model.name, "version": version, "content_hash": model.version}, keep,
                              f"; the alias {CHAMPION} is unchanged", alias=alias)
        log.info("%s: serving %s in slot %s (%s)", plan.endpoint, uri, slots.slot, slots.url)
        return roll_out(plan, slots)

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
