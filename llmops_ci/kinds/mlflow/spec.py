"""The ``mlflow_agent:`` block of a flow entry in llmops.yaml: its schema and the typed value built from it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_ci.core.schema import BOOL, STR, ListOf, OneOf, PathValue, Scalar, Struct, as_dict
from llmops_ci.core.yamldoc import Key
from llmops_ci.diagnostics.origin import Origin

AGENT_RESOURCE_TYPES = ("serving_endpoint", "vector_search_index", "function", "genie_space", "sql_warehouse", "table",
                        "uc_connection", "app", "lakebase", "uc_model_service")
AGENT_RESOURCE = OneOf((STR, Struct({"name": STR, "on_behalf_of_user": BOOL}, required=("name",),
                                    what="in a resource")),
                       "a name, or {name: ..., on_behalf_of_user: true}")
AGENT_RESOURCES = Struct({t: ListOf(AGENT_RESOURCE) for t in AGENT_RESOURCE_TYPES}, what="in resources")
MLFLOW_AGENT = Struct(
    {"code": PathValue(), "interface": Scalar((str,), choices=("responses", "chat")), "resources": AGENT_RESOURCES,
     "pip_requirements": ListOf(STR),
     "auth_policy": Struct({"system_resources": AGENT_RESOURCES, "api_scopes": ListOf(STR)},
                           what="in auth_policy")},
    required=("code", "interface"), what="in mlflow_agent", exclusive=(("resources", "auth_policy"),))


@dataclass(frozen=True)
class AgentResource:
    """A Databricks resource the agent may use; ``type`` is a key of ``resources:`` (serving_endpoint, ...)."""

    type: str
    name: str
    on_behalf_of_user: bool = False
    key: Key = field(default=(), repr=False, compare=False)  # where in mlflow_agent: it is written


@dataclass(frozen=True)
class MlflowAgentSpec:
    code: Path  # absolute: the file that calls mlflow.models.set_model
    interface: str  # responses | chat
    resources: tuple[AgentResource, ...]
    pip_requirements: tuple[str, ...]
    auth_policy: bool = False  # resources came from auth_policy.system_resources
    api_scopes: tuple[str, ...] = ()
    origin: Origin | None = field(default=None, repr=False, compare=False)  # at flows.<name>.mlflow_agent


def _agent_resources(raw: Any, key: Key) -> tuple[AgentResource, ...]:
    out = []
    for rtype, items in as_dict(raw).items():
        if rtype not in AGENT_RESOURCE_TYPES or not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            if isinstance(item, str):
                out.append(AgentResource(rtype, item, False, (*key, rtype, i)))
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                out.append(AgentResource(rtype, item["name"], item.get("on_behalf_of_user") is True,
                                         (*key, rtype, i)))
    return tuple(out)


def agent_spec(folder: Path, raw: Any, origin: Origin) -> MlflowAgentSpec | None:
    """The block as a typed value; None when it is absent or too broken to build (the schema check says why)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("code"), str) or raw.get("interface") not in (
            "responses", "chat"):
        return None
    policy = raw.get("auth_policy")
    if isinstance(policy, dict):
        resources = _agent_resources(policy.get("system_resources"), ("auth_policy", "system_resources"))
    else:
        resources = _agent_resources(raw.get("resources"), ("resources",))
    return MlflowAgentSpec(
        code=Path(os.path.normpath(folder / raw["code"])), interface=raw["interface"], resources=resources,
        pip_requirements=tuple(r for r in raw.get("pip_requirements") or [] if isinstance(r, str)),
        auth_policy=isinstance(policy, dict),
        api_scopes=tuple(s for s in as_dict(policy).get("api_scopes") or [] if isinstance(s, str)),
        origin=origin)
