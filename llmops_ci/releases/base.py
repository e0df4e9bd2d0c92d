"""The ``Release`` protocol: register, deploy and their dry runs, for one place models go."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from llmops_ci.releases.spec import DeployPlan, DeployResult, ModelSpec
    from llmops_ci.results.records import ProviderConnection


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
