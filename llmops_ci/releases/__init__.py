"""Release targets: where ``--backend`` registers and deploys models, chosen per model from its flow's kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from llmops_ci.engines.base import BackendContext
from llmops_ci.releases.base import Release

if TYPE_CHECKING:
    from llmops_ci.kinds.base import FlowInfo
    from llmops_ci.releases.spec import DeployPlan, DeployResult, ModelSpec
    from llmops_ci.results.records import ProviderConnection


class ByKind(Release):
    """One ``--backend`` whose flows of some kinds go to another release (MLflow agents to the MLflow registry),
    chosen per model from the kind of the flow it is made from."""

    def __init__(self, name: str, ctx: BackendContext, default: Callable[[BackendContext], Release],
                 kinds: dict[str, Callable[[BackendContext], Release]]) -> None:
        self.name, self.ctx, self.default, self.kinds = name, ctx, default, kinds
        self._built: dict[str, Release] = {}

    def _pick(self, info: FlowInfo | None) -> Release:
        kind = info.kind if info is not None and info.kind in self.kinds else ""
        if kind not in self._built:
            self._built[kind] = (self.kinds[kind] if kind else self.default)(self.ctx)
        return self._built[kind]

    def _for(self, spec: ModelSpec) -> Release:
        return self._pick(self.ctx.project.info(spec.path))

    def deploys(self, info: FlowInfo) -> bool:
        return self._pick(info).deploys(info)

    def register(self, spec: ModelSpec) -> tuple[str, str, bool]:
        return self._for(spec).register(spec)

    def deploy(self, plan: DeployPlan, connections: tuple[ProviderConnection, ...], keep: bool) -> DeployResult:
        return self._for(plan.model).deploy(plan, connections, keep)

    def dry_run_model(self, spec: ModelSpec) -> str:
        return self._for(spec).dry_run_model(spec)

    def dry_run_plan(self, plan: DeployPlan) -> str:
        return self._for(plan.model).dry_run_plan(plan)


def _prompt_flow_release(ctx: BackendContext) -> Release:
    from llmops_ci.releases.local import LocalRelease

    return LocalRelease(ctx.state_dir, ctx.registry or ctx.state_dir / "registry", dict(ctx.environ))


def _mlflow_release(ctx: BackendContext) -> Release:
    from llmops_ci.releases.mlflow import from_context

    return from_context(ctx)


def _maf_release(ctx: BackendContext) -> Release:
    from llmops_ci.releases.agent_framework import from_context

    return from_context(ctx)


def _local_release(ctx: BackendContext) -> Release:
    return ByKind("local", ctx, _prompt_flow_release, {"mlflow_agent": _mlflow_release,
                                                       "agent_framework": _maf_release})


def _databricks_release(ctx: BackendContext) -> Release:
    from llmops_ci.releases.databricks import from_context

    return from_context(ctx)


def _azureml_prompt_flow_release(ctx: BackendContext) -> Release:
    from llmops_ci.releases.azureml.release import ProjectRelease

    return ProjectRelease(ctx)


def _maf_azureml_release(ctx: BackendContext) -> Release:
    from llmops_ci.releases.azureml.agent_framework import from_context

    return from_context(ctx)


def _azureml_release(ctx: BackendContext) -> Release:
    return ByKind("azureml", ctx, _azureml_prompt_flow_release, {"agent_framework": _maf_azureml_release})


RELEASES: dict[str, Callable[[BackendContext], Release]] = {"local": _local_release, "azureml": _azureml_release,
                                                            "databricks": _databricks_release}
