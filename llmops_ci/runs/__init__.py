"""Run targets: where ``--backend`` sends batch and evaluation runs (``Backend`` protocol: ``engines.base``)."""

from __future__ import annotations

from collections.abc import Callable

from llmops_ci.engines.base import Backend, BackendContext
from llmops_ci.runs import local


def _azureml_runs(ctx: BackendContext) -> Backend:
    from llmops_ci.runs.azureml import AzureMLRuns

    return AzureMLRuns(ctx)


BACKENDS: dict[str, Callable[[BackendContext], Backend]] = {"local": local.from_context, "azureml": _azureml_runs}
