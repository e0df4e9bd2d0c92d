"""A flow's ``deploy:`` block: typed, with the limits of the targets it goes to checked where it is written."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Any

from llmops_ci.config.model import AZUREML_MAX_REQUEST_TIMEOUT_MS, MAX_SERVED_ENTITIES, DeploySpec
from llmops_ci.config.paths import outside
from llmops_ci.config.schema import DEPLOY_CLOUD_KEYS
from llmops_ci.core.errors import Problem
from llmops_ci.core.schema import BOOL, INT, STR, as_dict
from llmops_ci.diagnostics.origin import Origin


def deploy_spec(raw: Any, origin: Origin, root: Path) -> tuple[DeploySpec | None, list[Problem]]:
    """``raw`` (a flow's deploy: block) typed, and the problems the schema cannot see; None without an endpoint."""
    problems: list[Problem] = []
    if not isinstance(raw, dict) or not isinstance(raw.get("endpoint"), str):
        return None, problems
    dep = raw
    raw_traffic = dep.get("traffic", [100])
    traffic = tuple(t for t in raw_traffic if isinstance(t, int)) if isinstance(raw_traffic, list) else ()
    if isinstance(raw_traffic, list) and len(traffic) == len(raw_traffic):  # else the schema said why
        problems += _traffic_problems(origin, traffic)
    for key in ("instance_count", "request_timeout_ms", "max_concurrent_requests", "worker_num",
                "worker_threads"):
        if isinstance(dep.get(key), int) and not isinstance(dep[key], bool) and dep[key] < 1:
            problems.append(origin.problem(("deploy", key), f"{key} must be 1 or more", "wrong-type"))
    problems += _deploy_limits(origin, dep)
    smoke = dep.get("smoke_tests") if isinstance(dep.get("smoke_tests"), str) else None
    if smoke is not None and smoke.strip():
        problems += outside(root, origin, ("deploy", "smoke_tests"), Path(os.path.normpath(root / smoke)))
    return DeploySpec(dep["endpoint"], dep.get("instance_type"),
                      dep["instance_count"] if isinstance(dep.get("instance_count"), int) else 1,
                      traffic or (100,), smoke,
                      dict(as_dict(dep.get("environment_variables"))),
                      dep["request_timeout_ms"] if isinstance(dep.get("request_timeout_ms"), int) else None,
                      **_deploy_cloud(dep)), problems


def _deploy_cloud(dep: dict[str, Any]) -> dict[str, Any]:
    """The backend-specific deploy: keys, typed; a value of the wrong type was reported by the schema."""
    out: dict[str, Any] = {}
    for key, spec in DEPLOY_CLOUD_KEYS.items():
        value = dep.get(key)
        if (spec is BOOL and isinstance(value, bool)) or (spec is STR and isinstance(value, str)) or (
                spec is INT and isinstance(value, int) and not isinstance(value, bool)):
            out[key] = value
    out["probes"] = {k: {n: v for n, v in as_dict(p).items() if isinstance(v, int)}
                     for k, p in as_dict(dep.get("probes")).items() if isinstance(p, dict)}
    out["identity"] = {k: v for k, v in as_dict(dep.get("identity")).items() if isinstance(v, str)}
    return out


def _deploy_limits(origin: Origin, dep: dict[str, Any]) -> list[Problem]:
    problems = []
    timeout = dep.get("request_timeout_ms")
    if isinstance(timeout, int) and timeout > AZUREML_MAX_REQUEST_TIMEOUT_MS:
        problems.append(origin.problem(("deploy", "request_timeout_ms"), (
            f"request_timeout_ms {timeout} is over {AZUREML_MAX_REQUEST_TIMEOUT_MS}, the most an Azure ML managed "
            "online deployment allows"), "wrong-type"))
    keep = dep.get("keep_previous")
    if isinstance(keep, int) and not 0 <= keep < MAX_SERVED_ENTITIES:
        problems.append(origin.problem(("deploy", "keep_previous"), (
            f"keep_previous must be 0 to {MAX_SERVED_ENTITIES - 1}: a Databricks endpoint serves at most "
            f"{MAX_SERVED_ENTITIES} entities, the new one included"), "wrong-type"))
    identity = as_dict(dep.get("identity"))
    if identity.get("type") == "user_assigned":
        rid = identity.get("resource_id")
        if not isinstance(rid, str) or not re.fullmatch(
                r"/subscriptions/[^/]+/resource[gG]roups/[^/]+/providers/"
                r"Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+", rid):
            problems.append(origin.problem(("deploy", "identity"), (
                "a user-assigned identity needs resource_id: /subscriptions/<id>/resourceGroups/<group>/providers/"
                "Microsoft.ManagedIdentity/userAssignedIdentities/<name>"), "wrong-type"))
        if not isinstance(identity.get("client_id"), str):
            problems.append(origin.problem(("deploy", "identity"), (
                "a user-assigned identity needs client_id (prompt flow serving reads it as UAI_CLIENT_ID to reach "
                "the workspace's connections)"), "wrong-type"))
    elif identity.get("type") == "system_assigned" and ("resource_id" in identity or "client_id" in identity):
        problems.append(origin.problem(("deploy", "identity"), (
            "resource_id and client_id are for type: user_assigned; a system-assigned identity has neither"),
            "wrong-type"))
    return problems


def _traffic_problems(origin: Origin, traffic: tuple[int, ...]) -> list[Problem]:
    # strictly rising: a repeated step ([10, 10, 100]) is a typo, not a pause
    if not traffic or any(t < 1 or t > 100 for t in traffic) or any(a >= b for a, b in itertools.pairwise(traffic)) \
            or traffic[-1] != 100:
        return [origin.problem(("deploy", "traffic"), "traffic must be rising percentages from 1 to 100, each "
                               f"above the last, that end at 100, e.g. [10, 100] (got {list(traffic)})", "wrong-type")]
    return []

