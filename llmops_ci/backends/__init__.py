"""Where flows run and where models go: the ``Backend`` (runs) and ``Release`` (register, deploy, dry-run)
protocols, and their registries.

A factory receives a ``BackendContext`` (the loaded project, the state dir and the environment) and
must not reach a service when it is built: ``--dry-run`` needs no credentials.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from llmops_ci.kinds import FlowInfo
    from llmops_ci.progress import Progress
    from llmops_ci.project import Project
    from llmops_ci.release import DeployPlan, DeployResult, ModelSpec
    from llmops_ci.runs import ProviderConnection, RunJob, RunRecord, TestJob, TestRecord


@dataclass(frozen=True)
class BackendContext:
    project: Project
    state_dir: Path
    environ: Mapping[str, str]
    registry: Path | None = None  # --registry: the local release's model registry folder


class Backend(Protocol):
    name: str
    # False when LLM calls cannot go through the local record/replay proxy (the flow runs somewhere else)
    routes_local_proxy: bool

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        """One batch run (a flow over its data, or an evaluation over a base run)."""
        ...

    def test(self, job: TestJob) -> TestRecord:
        """One input through one flow."""
        ...


class Release(Protocol):
    name: str

    def register(self, spec: ModelSpec) -> tuple[str, str, bool]:
        """(name, version, created): registering the same content again creates nothing."""
        ...

    def deploy(self, plan: DeployPlan, connections: tuple[ProviderConnection, ...], keep: bool) -> DeployResult:
        """Blue/green with smoke tests and traffic steps; a failure leaves the previous deployment serving."""
        ...

    def dry_run_model(self, spec: ModelSpec) -> str:
        """Exactly what ``register`` would create, as text; reaches no service."""
        ...

    def dry_run_plan(self, plan: DeployPlan) -> str:
        """Exactly what ``deploy`` would create, as text; reaches no service."""
        ...


class RunsByEngine:
    """One ``--backend`` for runs whose flows go to the executor their kind (or engine) needs: prompt flow's for
    DAG, flex and prompt flow prompty files, MLflow's for agents, the prompty package for prompty 2.x files."""

    routes_local_proxy = True
    parallel_runs = True  # flows side by side; each engine shares --workers among its own runs

    def __init__(self, name: str, ctx: BackendContext, default: Callable[[BackendContext], Backend],
                 engines: dict[str, Callable[[BackendContext], Backend]]) -> None:
        self.name, self.ctx, self.default, self.engines = name, ctx, default, engines
        self._built: dict[str, Backend] = {}
        self._lock = threading.Lock()

    def for_info(self, info: FlowInfo) -> Backend:
        # the engine a kind declares for this file decides alone (a prompty file in prompt flow's format declares
        # "promptflow", which is the default); only without one does the kind pick
        wanted = info.engine or info.kind
        key = wanted if wanted in self.engines else ""
        with self._lock:  # runs start from several threads at once
            if key not in self._built:
                self._built[key] = (self.engines[key] if key else self.default)(self.ctx)
            return self._built[key]

    def endpoint_down(self, run_name: str) -> str | None:
        for backend in list(self._built.values()):
            found = getattr(backend, "endpoint_down", None)
            reason = found(run_name) if found is not None else None
            if reason:
                return str(reason)
        return None

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        return self.for_info(job.info).run(job, progress)

    def test(self, job: TestJob) -> TestRecord:
        return self.for_info(job.info).test(job)

    def prestart(self, infos: list[FlowInfo], workers: int) -> None:
        """Let the default engine (prompt flow's) start its executor ahead when it will run one of ``infos``. Other
        engines are built when their first run needs them (building one may import its library)."""
        mine = [info for info in infos if (info.engine or info.kind) not in self.engines]
        start = getattr(self.for_info(mine[0]), "prestart", None) if mine else None
        if start is not None:
            start(mine, workers)

    def close(self) -> None:
        with self._lock:
            built = list(self._built.values())
            self._built.clear()
        for backend in built:
            close = getattr(backend, "close", None)
            if close is not None:
                close()


def _prompt_flow(ctx: BackendContext) -> Backend:
    from llmops_ci.backends.local import LocalBackend

    return LocalBackend(ctx.state_dir, dict(ctx.environ))


def _mlflow_runs(ctx: BackendContext) -> Backend:
    from llmops_ci.backends.mlflow_local import from_context

    return from_context(ctx)


def _prompty_runs(ctx: BackendContext) -> Backend:
    from llmops_ci.backends.prompty_local import from_context

    return from_context(ctx)


def _evaluator_runs(ctx: BackendContext) -> Backend:
    from llmops_ci.backends.evaluator_local import from_context

    return from_context(ctx)


def _agent_framework_runs(ctx: BackendContext) -> Backend:
    from llmops_ci.backends.maf_local import from_context

    return from_context(ctx)


def _local(ctx: BackendContext) -> Backend:
    return RunsByEngine("local", ctx, _prompt_flow, {"mlflow_agent": _mlflow_runs, "prompty": _prompty_runs,
                                                     "evaluator": _evaluator_runs,
                                                     "agent_framework": _agent_framework_runs})


class ByKind:
    """One ``--backend`` whose flows of some kinds go to another release (MLflow agents to the MLflow registry),
    chosen per model from the kind of the flow it is made from."""

    def __init__(self, name: str, ctx: BackendContext, default: Callable[[BackendContext], Release],
                 kinds: dict[str, Callable[[BackendContext], Release]]) -> None:
        self.name, self.ctx, self.default, self.kinds = name, ctx, default, kinds
        self._built: dict[str, Release] = {}

    def _for(self, spec: ModelSpec) -> Release:
        info = self.ctx.project.info(spec.path)
        kind = info.kind if info is not None and info.kind in self.kinds else ""
        if kind not in self._built:
            self._built[kind] = (self.kinds[kind] if kind else self.default)(self.ctx)
        return self._built[kind]

    def register(self, spec: ModelSpec) -> tuple[str, str, bool]:
        return self._for(spec).register(spec)

    def deploy(self, plan: DeployPlan, connections: tuple[ProviderConnection, ...], keep: bool) -> DeployResult:
        return self._for(plan.model).deploy(plan, connections, keep)

    def dry_run_model(self, spec: ModelSpec) -> str:
        return self._for(spec).dry_run_model(spec)

    def dry_run_plan(self, plan: DeployPlan) -> str:
        return self._for(plan.model).dry_run_plan(plan)


def _prompt_flow_release(ctx: BackendContext) -> Release:
    from llmops_ci.backends.local_release import LocalRelease

    return LocalRelease(ctx.state_dir, ctx.registry or ctx.state_dir / "registry", dict(ctx.environ))


def _mlflow_release(ctx: BackendContext) -> Release:
    from llmops_ci.backends.mlflow_release import from_context

    return from_context(ctx)


def _maf_release(ctx: BackendContext) -> Release:
    from llmops_ci.backends.maf_release import from_context

    return from_context(ctx)


def _local_release(ctx: BackendContext) -> Release:
    return ByKind("local", ctx, _prompt_flow_release, {"mlflow_agent": _mlflow_release,
                                                       "agent_framework": _maf_release})


def _databricks_release(ctx: BackendContext) -> Release:
    from llmops_ci.backends.databricks import from_context

    return from_context(ctx)


def _azureml_prompt_flow_release(ctx: BackendContext) -> Release:
    from llmops_ci.backends.azureml import ProjectRelease

    return ProjectRelease(ctx)


def _maf_azureml_release(ctx: BackendContext) -> Release:
    from llmops_ci.backends.maf_azureml import from_context

    return from_context(ctx)


def _azureml_release(ctx: BackendContext) -> Release:
    return ByKind("azureml", ctx, _azureml_prompt_flow_release, {"agent_framework": _maf_azureml_release})


def _azureml_runs(ctx: BackendContext) -> Backend:
    from llmops_ci.backends.azureml_runs import AzureMLRuns

    return AzureMLRuns(ctx)


BACKENDS: dict[str, Callable[[BackendContext], Backend]] = {"local": _local, "azureml": _azureml_runs}
RELEASES: dict[str, Callable[[BackendContext], Release]] = {"local": _local_release, "azureml": _azureml_release,
                                                            "databricks": _databricks_release}


def backend_names() -> list[str]:
    """Every name ``--backend`` accepts: a backend for runs, for releases, or both."""
    return list(dict.fromkeys([*BACKENDS, *RELEASES]))
