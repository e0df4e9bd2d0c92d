"""What a managed online deployment of a flow needs beyond the model: the ``deploy:`` keys as azure-ai-ml entities.

Sources, per setting (docs/azureml-runs.md lists them with what was tried):
- ``request_settings``: ``OnlineRequestSettings``; the service's default request timeout is 5000 ms (Microsoft's
  "Troubleshooting online endpoints" page), too short for an LLM flow, so ours is the most the service takes
  (180000 ms, the ``request_timeout_ms`` limit of the managed online deployment YAML reference) unless set.
- probes: ``ProbeSettings`` (initial_delay, period, timeout, failure_threshold, success_threshold).
- ``PROMPTFLOW_WORKER_NUM`` / ``PROMPTFLOW_WORKER_THREADS``: prompt flow serving's worker processes and threads
  (the flow deployment docs' concurrency section); ``max_concurrent_requests_per_instance`` follows their product
  unless set, so the container is sent no more than it can serve at once.
- identity: the endpoint's ``IdentityConfiguration``; a user-assigned identity's client id goes to the deployment
  as ``UAI_CLIENT_ID`` (the "deploy a flow with the CLI" docs), and ``enforce_access_to_default_secret_stores``
  applies only to a system-assigned one.
- a flow's ``requirements.txt`` (``environment.python_requirements_txt`` in its YAML) becomes a custom environment
  built from the prompt flow runtime image (the docs' Dockerfile: ``COPY`` and ``pip install -r``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from azure.ai.ml.entities import (
    BuildContext,
    Environment,
    IdentityConfiguration,
    ManagedIdentityConfiguration,
    OnlineRequestSettings,
    ProbeSettings,
)

from llmops_ci.config import AZUREML_MAX_REQUEST_TIMEOUT_MS, DeploySpec
from llmops_ci.core.errors import UsageError
from llmops_ci.releases.spec import DeployPlan, ModelSpec

PROMPTFLOW_IMAGE = "mcr.microsoft.com/azureml/promptflow/promptflow-runtime:latest"
ROUTES = {"liveness_route": {"path": "/health", "port": 8080},
          "readiness_route": {"path": "/health", "port": 8080},
          "scoring_route": {"path": "/score", "port": 8080}}
DOCKERFILE = f"FROM {PROMPTFLOW_IMAGE}\nCOPY ./requirements.txt .\nRUN pip install -r requirements.txt\n"


def settings_of(plan: DeployPlan) -> DeploySpec:
    return plan.settings or DeploySpec(plan.endpoint)


def request_settings(plan: DeployPlan) -> OnlineRequestSettings:
    settings = settings_of(plan)
    concurrency = settings.max_concurrent_requests
    if concurrency is None and (settings.worker_num or settings.worker_threads):
        concurrency = (settings.worker_num or 1) * (settings.worker_threads or 1)
    return OnlineRequestSettings(request_timeout_ms=plan.request_timeout_ms or AZUREML_MAX_REQUEST_TIMEOUT_MS,
                                 max_concurrent_requests_per_instance=concurrency)


def probe(plan: DeployPlan, which: str) -> ProbeSettings | None:
    values = settings_of(plan).probes.get(which)
    return ProbeSettings(**values) if values else None


def worker_environment(plan: DeployPlan) -> dict[str, str]:
    settings = settings_of(plan)
    env = {}
    if settings.worker_num:
        env["PROMPTFLOW_WORKER_NUM"] = str(settings.worker_num)
    if settings.worker_threads:
        env["PROMPTFLOW_WORKER_THREADS"] = str(settings.worker_threads)
    if settings.identity.get("type") == "user_assigned":
        env["UAI_CLIENT_ID"] = settings.identity.get("client_id", "")
    return env


def endpoint_identity(plan: DeployPlan) -> IdentityConfiguration:
    identity = settings_of(plan).identity
    if identity.get("type") == "user_assigned":
        return IdentityConfiguration(type="user_assigned", user_assigned_identities=[
            ManagedIdentityConfiguration(resource_id=identity.get("resource_id"))])
    return IdentityConfiguration(type="system_assigned")


def system_assigned(plan: DeployPlan) -> bool:
    return settings_of(plan).identity.get("type", "system_assigned") == "system_assigned"


def requirements_file(spec: ModelSpec) -> Path | None:
    """The flow's requirements file: ``environment.python_requirements_txt`` of its flow YAML, else a
    ``requirements.txt`` beside it."""
    folder = spec.path if spec.path.is_dir() else spec.path.parent
    for name in ("flow.dag.yaml", "flow.flex.yaml"):
        definition = folder / name
        if definition.is_file():
            try:
                doc = yaml.safe_load(definition.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError, UnicodeDecodeError):
                doc = None
            env = doc.get("environment") if isinstance(doc, dict) else None
            named = env.get("python_requirements_txt") if isinstance(env, dict) else None
            if isinstance(named, str) and named.strip():
                path = (folder / named).resolve()
                if not path.is_relative_to(folder.resolve()) or not path.is_file():
                    raise UsageError(f"{definition}: environment.python_requirements_txt '{named}' is not a file in "
                                     "the flow folder; the deployment's image could not install it")
                return path
    default = folder / "requirements.txt"
    return default if default.is_file() and not default.is_symlink() else None


def serving_environment(spec: ModelSpec, build_root: Path | None) -> Environment:
    """The prompt flow runtime image, or, for a flow with requirements, an image built from it that installs them
    (the build context, a Dockerfile and the requirements, is written under ``build_root``)."""
    requirements = requirements_file(spec)
    if requirements is None or build_root is None:
        return Environment(image=PROMPTFLOW_IMAGE, inference_config=dict(ROUTES))
    context = build_root / f"{spec.flow}-{spec.version}"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text(DOCKERFILE, encoding="utf-8")
    (context / "requirements.txt").write_bytes(requirements.read_bytes())
    return Environment(build=BuildContext(path=str(context), dockerfile_path="Dockerfile"),
                       inference_config=dict(ROUTES))


def describe(plan: DeployPlan) -> dict[str, Any]:
    """The settings a dry run states beside the entities (defaults included)."""
    settings = settings_of(plan)
    return {"request_timeout_ms": plan.request_timeout_ms or AZUREML_MAX_REQUEST_TIMEOUT_MS,
            "app_insights_enabled": settings.app_insights,
            "identity": settings.identity.get("type", "system_assigned")}
