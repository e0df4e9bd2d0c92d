"""The engines that run a flow on this machine, by the name a kind declares (``FlowInfo.engine``, else its kind):
prompt flow's executor is the default; MLflow, the prompty package, evaluators and Agent Framework each run in a
module of their own, imported only when a run needs it. A new engine is its module and one line in ``ENGINES``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmops_ci.engines.base import Backend, BackendContext
    from llmops_ci.kinds.base import FlowInfo


def _prompt_flow(ctx: BackendContext) -> Backend:
    from llmops_ci.engines.promptflow.executor import LocalBackend

    return LocalBackend(ctx.state_dir, dict(ctx.environ), keep_s=ctx.keep_executor_s)


def _mlflow_runs(ctx: BackendContext) -> Backend:
    from llmops_ci.engines.mlflow.engine import from_context

    return from_context(ctx)


def _prompty_runs(ctx: BackendContext) -> Backend:
    from llmops_ci.engines.prompty.engine import from_context

    return from_context(ctx)


def _evaluator_runs(ctx: BackendContext) -> Backend:
    from llmops_ci.engines.evaluators.engine import from_context

    return from_context(ctx)


def _agent_framework_runs(ctx: BackendContext) -> Backend:
    from llmops_ci.engines.agent_framework.engine import from_context

    return from_context(ctx)


DEFAULT: Callable[[BackendContext], Backend] = _prompt_flow
ENGINES: dict[str, Callable[[BackendContext], Backend]] = {
    "mlflow_agent": _mlflow_runs,
    "prompty": _prompty_runs,
    "evaluator": _evaluator_runs,
    "agent_framework": _agent_framework_runs,
}


def engine_of(info: FlowInfo) -> str:
    """The engine that runs a flow: the one its kind declares for the file, else the one named after its kind,
    else prompt flow's."""
    # imported here, not above: the executor's process imports this package first thing and needs none of it
    from llmops_ci.engines.base import PROMPT_FLOW

    wanted = info.engine or info.kind
    return wanted if wanted in ENGINES else PROMPT_FLOW
