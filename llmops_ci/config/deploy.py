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
from llmops_ci.core.schema import as_dict, as_list
from llmops_ci.diagnostics.origin import Origin


def deploy_spec(dep: dict[str, Any] | None, written: dict[str, Any], origin: Origin,
                root: Path) -> tuple[DeploySpec | None, list[Problem]]:
    """A flow's deploy: block, as the schema check handed it back (every value of its declared type), typed, with
    the problems the schema cannot see; None without an endpoint. ``written`` is the block as written, asked only
    whether a key is there."""
    problems: list[Problem] = []
    if dep is None or "endpoint" not in dep:
        return None, problems
    traffic = tuple(dep.get("traffic", [100]))
    if len(traffic) == len(as_list(written.get("traffic", [100]))):  # else the schema said which step is wrong
        problems += _traffic_problems(origin, traffic)
    for key in ("instance_count", "request_timeout_ms", "max_concurrent_requests", "worker_num",
                "worker_threads"):
        if dep.get(key, 1) < 1:
            problems.append(origin.problem(("deploy", key), f"{key} must be 1 or more", "wrong-type"))
    problems += _deploy_limits(origin, dep, as_dict(written.get("identity")))
    smoke = dep.get("smoke_tests")
    if smoke is not None:
        problems += outside(root, origin, ("deploy", "smoke_tests"), Path(os.path.normpath(root / smoke)))
    cloud = {key: dep[key] for key in DEPLOY_CLOUD_KEYS if key in dep}
    cloud.update(probes=dep.get("probes", {}), identity=dep.get("identity", {}))
    return DeploySpec(dep["endpoint"], dep.get("instance_type"), dep.get("instance_count", 1), traffic or (100,),
                      smoke, dict(dep.get("environment_variables", {})), dep.get("request_timeout_ms"),
                      **cloud), problems


def _deploy_limits(origin: Origin, dep: dict[str, Any], written_identity: dict[str, Any]) -> list[Problem]:
    problems = []
    timeout = dep.get("request_timeout_ms")
    if timeout is not None and timeout > AZUREML_MAX_REQUEST_TIMEOUT_MS:
        problems.append(origin.problem(("deploy", "request_timeout_ms"), (
            f"request_timeout_ms {timeout} is over {AZUREML_MAX_REQUEST_TIMEOUT_MS}, the most an Azure ML managed "
            "online deployment allows"), "wrong-type"))
    keep = dep.get("keep_previous")
    if keep is not None and not 0 <= keep < MAX_SERVED_ENTITIES:
        problems.append(origin.problem(("deploy", "keep_previous"), (
            f"keep_previous must be 0 to {MAX_SERVED_ENTITIES - 1}: a Databricks endpoint serves at most "
            f"{MAX_SERVED_ENTITIES} entities, the new one included"), "wrong-type"))
    identity = dep.get("identity", {})
    if identity.get("type") == "user_assigned":
        rid = identity.get("resource_id")
        if rid is None or not re.fullmatch(
                r"/subscriptions/[^/]+/resource[gG]roups/[^/]+/providers/"
                r"Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+", rid):
            problems.append(origin.problem(("deploy", "identity"), (
                "a user-assigned identity needs resource_id: /subscriptions/<id>/resourceGroups/<group>/providers/"
                "Microsoft.ManagedIdentity/userAssignedIdentities/<name>"), "wrong-type"))
        if "client_id" not in identity:
            problems.append(origin.problem(("deploy", "identity"), (
                "a user-assigned identity needs client_id (prompt flow serving reads it as UAI_CLIENT_ID to reach "
                "the workspace's connections)"), "wrong-type"))
    elif identity.get("type") == "system_assigned" and (
            "resource_id" in written_identity or "client_id" in written_identity):  # even of the wrong type
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

