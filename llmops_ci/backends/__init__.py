"""Where flows run and where models go: the ``Backend`` (runs) and ``Release`` (register, deploy, dry-run)
protocols, and their registries.

A factory receives a ``BackendContext`` (the loaded project, the state dir and the environment) and
must not reach a service when it is built: ``--dry-run`` needs no credentials.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
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


def _local(ctx: BackendContext) -> Backend:
    from llmops_ci.backends.local import LocalBackend

    return LocalBackend(ctx.state_dir, dict(ctx.environ))


def _local_release(ctx: BackendContext) -> Release:
    from llmops_ci.backends.local_release import LocalRelease

    return LocalRelease(ctx.state_dir, ctx.registry or ctx.state_dir / "registry", dict(ctx.environ))


def _azureml_release(ctx: BackendContext) -> Release:
    from llmops_ci.backends.azureml import ProjectRelease

    return ProjectRelease(ctx)


def _azureml_runs(ctx: BackendContext) -> Backend:
    from llmops_ci.backends.azureml_runs import AzureMLRuns

    return AzureMLRuns(ctx)


BACKENDS: dict[str, Callable[[BackendContext], Backend]] = {"local": _local, "azureml": _azureml_runs}
RELEASES: dict[str, Callable[[BackendContext], Release]] = {"local": _local_release, "azureml": _azureml_release}


def backend_names() -> list[str]:
    """Every name ``--backend`` accepts: a backend for runs, for releases, or both."""
    return list(dict.fromkeys([*BACKENDS, *RELEASES]))
