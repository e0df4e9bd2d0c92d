"""The ``Release`` protocol: register, deploy and their dry runs, for one place models go, with the engines whose
flows it deploys; ``check_engine`` refuses the others before anything is created."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol

from llmops_ci.engines import engine_of
from llmops_ci.engines.base import PROMPT_FLOW, EngineUse
from llmops_ci.engines.base import check_engine as check_engine_of_target

if TYPE_CHECKING:
    from llmops_ci.config import FlowSpec
    from llmops_ci.core.errors import Problem
    from llmops_ci.kinds.base import FlowInfo
    from llmops_ci.releases.spec import DeployPlan, DeployResult, ModelSpec
    from llmops_ci.results.records import ProviderConnection

# why no target deploys an engine's flows, and what to do instead
NOT_SERVED = {"prompty": (
    "a .prompty file in the prompty 2.x format, which no deploy backend serves (prompt flow's serving and Azure ML "
    "endpoints read only prompt flow's own prompty format); call it from a flex flow and deploy that (see "
    "docs/migrating-to-flex.md), or remove this 'deploy:' block")}


class Release(Protocol):
    name: str
    # the engines (``engine_of``) whose flows ``deploy`` serves
    engines: ClassVar[frozenset[str]] = frozenset()

    def deploys(self, info: FlowInfo) -> bool:
        """Whether ``deploy`` serves this flow; a release that routes flows to others asks the one it would use."""
        return engine_of(info) in self.engines

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


def check_engine(release: Release, flows: Sequence[tuple[FlowSpec, FlowInfo | None]]) -> None:
    """Refuse, at each flow's ``deploy:`` block, the flows whose engine ``release`` does not deploy (before anything
    is created: a dry run must not show what cannot be), through the one check every target uses
    (``engines.base.check_engine``). A flow that cannot be read is left to lint's message."""
    readable = [(flow, info) for flow, info in flows if info is not None]
    accepts = {engine_of(info) for _, info in readable if release.deploys(info)}
    uses = [EngineUse(flow.name, engine_of(info), functools.partial(_at_deploy, flow, _why(release, info)))
            for flow, info in readable]
    check_engine_of_target(f"--backend {release.name}", accepts, uses)


def _why(release: Release, info: FlowInfo) -> str:
    """Why ``release`` does not deploy this flow, naming the flow's own kind (two kinds may share an engine)."""
    run_by = f" run by {info.engine}" if info.engine not in (info.kind, PROMPT_FLOW) else ""
    return NOT_SERVED.get(engine_of(info)) or (
        f"a {info.kind} flow{run_by}, which --backend {release.name} does not deploy; deploy it with another "
        "backend, or remove this 'deploy:' block")


def _at_deploy(flow: FlowSpec, why: str, _engine_reason: str) -> Problem:
    # the per-flow ``why`` names the flow's kind; check_engine's reason names only the engine
    return flow.where("deploy").problem(("deploy",), f"flow '{flow.name}' is {why}", "deploy-unsupported",
                                        at_key=True)
