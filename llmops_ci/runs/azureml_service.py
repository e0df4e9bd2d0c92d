"""What the Azure ML prompt flow service says, in our terms: its failures as exit codes with what to do next,
the compute a run gets and the flow lineage it is filed under (both as promptflow-azure resolves them), a line of
a run as its run history returns it, and promptflow-azure's client as today's azure-ai-ml can load it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from llmops_ci.core.errors import LlmopsError, ServiceError, UsageError
from llmops_ci.core.schema import as_dict
from llmops_ci.results.records import LineResult, line_status

_STATUS_IN_TEXT = re.compile(r"(?:Status code|Code):\s*(\d{3})")
_FAILED_NODE = re.compile(r"Execution failure in '([^']+)'")


def _status_of(exc: BaseException) -> tuple[int | None, str]:
    """The HTTP status behind an exception that promptflow-azure or azure-core raised, and its first line."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        status = getattr(current, "status_code", None)
        if isinstance(status, int):
            return status, _first_line(current)
        match = _STATUS_IN_TEXT.search(str(current))
        if match:
            return int(match.group(1)), _first_line(current)
        current = getattr(current, "inner_exception", None) or current.__cause__ or current.__context__
    return None, _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc)
    said = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Error message:")]
    if said and said[0]:
        return said[0][:300]
    for line in text.splitlines():
        if line.strip() and not line.strip().startswith("Calling "):
            return line.strip()[:300]
    return type(exc).__name__


def service_error(what: str, exc: BaseException, workspace: str = "the workspace") -> LlmopsError:
    """An Azure failure as exit 2 or 3 with what to do next."""
    if isinstance(exc, LlmopsError):
        return exc
    status, text = _status_of(exc)
    name = type(exc).__name__
    if name in ("ClientAuthenticationError", "CredentialUnavailableError") or status == 401:
        return ServiceError(f"Azure ML: {what}: not authenticated ({text}); sign in first: 'az login' on a "
                            "laptop, azure/login with OIDC on GitHub Actions, an AzureCLI@2 step with a service "
                            "connection on Azure Pipelines (docs/azureml-runs.md)")
    if status == 403:
        return ServiceError(f"Azure ML: {what}: permission denied ({text}); give the identity the 'AzureML Data "
                            f"Scientist' role on {workspace} (docs/azureml-runs.md, least role)")
    if status == 429:
        return ServiceError(f"Azure ML: {what}: throttled or out of quota after retries ({text}); run again later, "
                            "submit fewer flows at once (--flow), or request more quota for the resources' "
                            "instance_type (or use a compute cluster)")
    if status is not None and status >= 500:
        return ServiceError(f"Azure ML: {what}: the service failed (HTTP {status}: {text}); run again later")
    if status == 404 and "workspace" in text.lower():
        return UsageError(f"Azure ML: {what}: {text}; check subscription_id, resource_group and workspace under "
                          "'azureml:' in llmops.yaml")
    return ServiceError(f"Azure ML: {what}: {text}" + (f" (HTTP {status})" if status else ""))


def compute_of(resources: dict[str, Any], details: dict[str, Any]) -> str:
    """Where the service runs a run, as promptflow-azure resolves it (``_resolve_runtime``: no runtime is the
    "automatic" compute session; ``resources`` become its vmSize and computeName)."""
    if details.get("runtime") and details["runtime"] != "automatic":
        return f"the runtime '{details['runtime']}' (a compute instance runtime, as its run.yml says)"
    if resources.get("compute"):
        size = f", instance type {resources['instance_type']}" if resources.get("instance_type") else ""
        return f"a compute session on the compute '{resources['compute']}'{size}"
    if resources.get("instance_type"):
        return f"a serverless compute session, instance type {resources['instance_type']}"
    return ("a serverless compute session of the workspace's default instance type (runtime 'automatic'); set "
            "resources: {instance_type: ...} or {compute: <cluster>} to choose it")


def flow_lineage_id(flow: Path) -> str:
    """promptflow's own lineage of the flow's folder (the repo's name and the folder's path in it)."""
    from promptflow._utils.flow_utils import get_flow_lineage_id

    return str(get_flow_lineage_id(flow_dir=flow))


def retryable(error: LlmopsError) -> bool:
    return isinstance(error, ServiceError) and ("throttled" in str(error) or "the service failed" in str(error)
                                                or "no answer within" in str(error))


def pf_client_class() -> Any:
    """promptflow-azure's ``PFClient``. Its last release (1.18) imports ``DatastoreType`` from azure-ai-ml's
    2022-10 REST client, which azure-ai-ml 1.33 removed; the same enum is in azure-ai-ml's current ARM client,
    so that module is provided under the old name when it is missing (the only symbol promptflow-azure takes
    from there)."""
    import importlib
    import sys
    import types

    old = "azure.ai.ml._restclient.v2022_10_01"
    try:
        importlib.import_module(old + ".models")
    except ModuleNotFoundError:
        from azure.ai.ml._restclient.arm_ml_service.models import DatastoreType

        package, models = types.ModuleType(old), types.ModuleType(old + ".models")
        models.DatastoreType = DatastoreType  # type: ignore[attr-defined]
        package.models = models  # type: ignore[attr-defined]
        sys.modules.update({old: package, old + ".models": models})
    from promptflow.azure import PFClient

    return PFClient


def line_result(child: dict[str, Any]) -> LineResult:
    """One child run (a line) as prompt flow's run history returns it."""
    metrics = as_dict(child.get("system_metrics") or child.get("systemMetrics"))
    error = as_dict(child.get("error"))
    message = error.get("message")
    duration = metrics.get("duration")
    node = _FAILED_NODE.search(str(message)) if message else None
    inputs = {k: v for k, v in as_dict(child.get("inputs")).items() if k != "line_number"}
    return LineResult(
        line=int(child.get("index", -1)), status=line_status(child.get("status"), "Azure ML"), inputs=inputs,
        outputs=child.get("output"),
        duration_s=float(duration) if isinstance(duration, (int, float)) else None,
        tokens={k: int(metrics.get(f"{k}_tokens") or 0) for k in ("prompt", "completion", "total")},
        error=str(message) if message else None,
        error_code=as_dict(error.get("innerError")).get("code") or error.get("code"),
        node=node.group(1) if node else None)
