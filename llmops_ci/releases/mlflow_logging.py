"""What logging an MLflow agent as a model writes and names, for every MLflow registry it goes to (the local
sqlite one, Unity Catalog): the log request, the content key and alias a version is found by, the resources
written into MLmodel, and the dry run of a registration."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from llmops_ci.config import FlowSpec
from llmops_ci.core.errors import UsageError
from llmops_ci.engines.mlflow.engine import data_example, model_config_path
from llmops_ci.kinds.mlflow.kind import resources_for_mlflow
from llmops_ci.kinds.mlflow.spec import MlflowAgentSpec
from llmops_ci.releases.spec import ModelSpec

CHALLENGER, CHAMPION = "challenger", "champion"


def agent_of(flows: Mapping[str, FlowSpec], spec: ModelSpec) -> tuple[FlowSpec, MlflowAgentSpec]:
    flow = flows.get(spec.flow)
    agent = flow.block(MlflowAgentSpec) if flow is not None else None
    if flow is None or agent is None:
        raise UsageError(f"flow '{spec.flow}' is not an MLflow agent (no mlflow_agent: block in llmops.yaml)")
    return flow, agent


def content_key(spec: ModelSpec, agent: MlflowAgentSpec) -> str:
    """The version's content tag: ``spec.version``, which for an agent already covers what logging writes into
    MLmodel from the config (release.content_hash), so the log, a dry run and deploy name one value."""
    return spec.version


def content_alias(key: str) -> str:
    """The alias naming the version that holds this content (``content_key``): a Unity Catalog search returns
    no tags, but a version is one GET away by its alias, on every MLflow registry and in databricks-sdk."""
    return f"llmops_{key}"


def mlmodel_resources(agent: MlflowAgentSpec) -> dict[str, Any]:
    """The resources block as MLflow writes it into MLmodel (``resources:`` or ``auth_policy:``)."""
    databricks: dict[str, list[dict[str, Any]]] = {}
    for res in agent.resources:
        item: dict[str, Any] = {"name": res.name}
        if res.on_behalf_of_user:
            item["on_behalf_of_user"] = True
        databricks.setdefault(res.type, []).append(item)
    block = {"api_version": "1", "databricks": databricks}
    if agent.auth_policy:
        return {"auth_policy": {"system_auth_policy": {"resources": block},
                                "user_auth_policy": {"api_scopes": list(agent.api_scopes)}}}
    return {"resources": block}


def log_request(flow: FlowSpec, agent: MlflowAgentSpec, spec: ModelSpec, code: Path) -> dict[str, Any]:
    """What the runner's ``log`` action needs; the same for the local and the Unity Catalog registry."""
    return {"code": str(code), "interface": agent.interface, "pip_requirements": list(agent.pip_requirements),
            "resources": [list(r) for r in resources_for_mlflow(agent)],
            "auth_policy": {"api_scopes": list(agent.api_scopes)} if agent.auth_policy else None,
            "input_example": data_example(flow.data, agent.interface), "model_config": model_config_path(code),
            "register_name": spec.name, "content_hash": content_key(spec, agent), "alias": CHALLENGER,
            "content_alias": content_alias(content_key(spec, agent)),
            "tags": spec.tags, "version_tags": spec.tags, "run_name": f"register-{spec.flow}-{spec.version}",
            "experiment": f"llmops-ci/{spec.flow}"}


def dry_run_model(flows: Mapping[str, FlowSpec], spec: ModelSpec, registry: str) -> str:
    _, agent = agent_of(flows, spec)
    doc = {"registry": registry, "name": spec.name, "content_hash": content_key(spec, agent), "flow": spec.flow,
           "log_model": {"python_model": str(agent.code), "pip_requirements": list(agent.pip_requirements),
                         **mlmodel_resources(agent)},
           "mlflow_resources": [f"{cls}({arg}={name!r})" for cls, arg, name, _ in resources_for_mlflow(agent)],
           "aliases": [CHALLENGER, content_alias(content_key(spec, agent)),
                       f"{CHAMPION} (after a successful deploy)"], "tags": spec.tags}
    if spec.description:
        doc["description"] = spec.description
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
