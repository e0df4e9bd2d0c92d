"""What register and deploy act on: a model spec (versioned by content) and smoke tests.

A model's version is the hash of what it would run: the flow's files (with additional_includes
merged), the variant and the connection overrides. Registering the same content again creates
nothing new. The model declares the resources its nodes call (connections, deployments, models)
so the endpoint can be checked, and granted access, before a deployment goes live.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_ci.config import Config, DeploySpec, FlowSpec
from llmops_ci.config.paths import inside_project
from llmops_ci.core.errors import UsageError
from llmops_ci.core.schema import as_dict, describe, did_you_mean
from llmops_ci.core.yamldoc import display_path
from llmops_ci.kinds.base import FlowInfo
from llmops_ci.kinds.mlflow.spec import MlflowAgentSpec
from llmops_ci.project.loaded import Project
from llmops_ci.results.provenance import tree_digest
from llmops_ci.results.summary import DeployStatus, FlowResult, RunResult, Summary


@dataclass(frozen=True)
class Resource:
    node: str
    connection: str | None
    deployment: str | None  # deployment_name or model the node asks for


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    flow: str  # the flow's name in llmops.yaml
    path: Path  # the flow folder
    description: str | None
    tags: dict[str, str]
    resources: tuple[Resource, ...]
    variant: str | None = None
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    chat_input: str | None = None
    chat_output: str | None = None
    chat_history: str | None = None


@dataclass(frozen=True)
class SmokeTest:
    name: str
    request: dict[str, Any]
    status: int = 200
    fields: tuple[str, ...] = ()
    contains: str | None = None
    regex: str | None = None

    def check(self, status: int, body: Any) -> str | None:
        """None when the response meets the expectations, else what is wrong."""
        if status != self.status:
            return f"HTTP {status}, expected {self.status}: {str(body)[:200]}"
        text = json.dumps(body, ensure_ascii=False) if not isinstance(body, str) else body
        missing = [f for f in self.fields if not isinstance(body, dict) or f not in body]
        if missing:
            return f"the response has no {', '.join(missing)} (it has: {', '.join(as_dict(body)) or 'nothing'})"
        if self.contains is not None and self.contains not in text:
            return f"the response does not contain {self.contains!r}"
        if self.regex is not None and not re.search(self.regex, text):
            return f"the response does not match /{self.regex}/"
        return None


@dataclass(frozen=True)
class DeployPlan:
    model: ModelSpec
    endpoint: str
    instance_type: str | None
    instance_count: int
    traffic: tuple[int, ...]  # percent on the new deployment, step by step, ending at 100
    smoke_tests: tuple[SmokeTest, ...]
    environment_variables: dict[str, str] = field(default_factory=dict)
    request_timeout_ms: int | None = None
    settings: DeploySpec | None = None  # the flow's deploy: block (the backend-specific keys)


@dataclass
class SmokeResult:
    name: str
    passed: bool
    error: str | None = None
    seconds: float | None = None


@dataclass
class DeployResult:
    endpoint: str
    deployment: str  # the slot deployed to: blue or green
    previous: str | None  # the slot that served before, if any
    status: DeployStatus
    traffic: dict[str, int]  # what serves now
    smoke: list[SmokeResult] = field(default_factory=list)
    url: str | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "deployment": self.deployment, "previous": self.previous,
                "status": self.status, "traffic": self.traffic, "url": self.url, "message": self.message,
                "smoke": [{"name": s.name, "passed": s.passed, "error": s.error, "seconds": s.seconds}
                          for s in self.smoke]}


def other_slot(serving: str | None) -> str:
    return "green" if serving == "blue" else "blue"


def agent_logged(agent: MlflowAgentSpec) -> dict[str, Any]:
    """What logging an MLflow agent writes into its MLmodel from the config: declaring another resource or
    requirement is other content."""
    return {"interface": agent.interface, "pip_requirements": list(agent.pip_requirements),
            "auth_policy": agent.auth_policy, "api_scopes": list(agent.api_scopes),
            "resources": sorted((r.type, r.name, r.on_behalf_of_user) for r in agent.resources)}


def content_hash(flow: FlowSpec, info: FlowInfo | None) -> str:
    """A short hash of everything that decides what the flow does (not when or where it was built): the one
    content identifier of a model version, the same in register's log, a dry run's ``content_hash``, the registry's
    ``llmops.content_hash`` tag and deploy's ``name:content_hash``."""
    digest = tree_digest(flow.path, info, {"variant": flow.variant, "connections": flow.connections})[:12]
    agent = flow.block(MlflowAgentSpec)
    if agent is None:
        return digest
    logged = json.dumps([digest, agent_logged(agent)], sort_keys=True, default=str)
    return hashlib.sha256(logged.encode()).hexdigest()[:12]


def git_commit(cwd: Path, ci_commit: str | None = None) -> str | None:
    """The commit the CI system built (``ci_commit``, from the platform's build tags), else the checkout's HEAD."""
    if ci_commit:
        return ci_commit
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def model_spec(project: Project, flow: FlowSpec, summary: Summary, build: Mapping[str, str]) -> ModelSpec:
    """``build``: what the CI platform tells of the build (``git.commit``, ``ci.build``, ``ci.pr``, those known)."""
    config = project.config
    entry = summary.flows.get(flow.name) or FlowResult()
    run_entry = entry.run or RunResult()
    tags: dict[str, str] = {"llmops.flow": flow.name}
    commit = git_commit(config.root, build.get("git.commit"))
    if commit:
        tags["git.commit"] = commit
    for key in ("ci.build", "ci.pr"):
        if build.get(key):
            tags[key] = build[key]
    if run_entry.name:
        tags["llmops.run"] = str(run_entry.name)
    gate = entry.gate  # what this model carries: the run the gate judged, and its verdict
    passed = gate.passed if gate is not None else None
    tags["llmops.gate"] = "passed" if passed is True else "failed" if passed is False else "none"
    for key, judged, ran in (("flow_hash", gate.flow_hash if gate else None, run_entry.flow_hash),
                             ("data_hash", gate.data_hash if gate else None, run_entry.data_hash)):
        value = judged or ran
        if value:
            tags[f"llmops.{key}"] = str(value)
    for ename, evaluation in entry.evaluations.items():
        tags[f"llmops.eval.{ename}.run"] = str(evaluation.run)
        for metric, value in evaluation.metrics.items():
            tags[f"metric.{ename}.{metric}"] = str(value)
    if flow.register and flow.register.tags:
        tags.update({str(k): str(v) for k, v in flow.register.tags.items()})
    resources: list[Resource] = []
    info = project.info(flow.path)
    if info is not None:
        for use in info.connections:
            override = flow.connections.get(use.node, {})
            deployment = override.get("deployment_name") or override.get("model")
            resources.append(Resource(use.node, override.get(use.field, use.connection),
                                      str(deployment) if deployment else None))
    name = (flow.register.name if flow.register and flow.register.name else None) or flow.name
    return ModelSpec(name=name, version=content_hash(flow, info), flow=flow.name, path=flow.path,
                     description=flow.register.description if flow.register else None, tags=tags,
                     resources=tuple(sorted(set(resources), key=lambda r: (r.node, str(r.connection)))),
                     variant=flow.variant,
                     connections=flow.connections, chat_input=info.chat_input if info else None,
                     chat_output=info.chat_output if info else None,
                     chat_history=info.chat_history if info else None)


_EXPECT_KEYS = ("status", "fields", "contains", "regex")
SMOKE_MAX_BYTES = 1_000_000


def load_smoke_tests(config: Config, flow: FlowSpec) -> list[SmokeTest]:
    """Request bodies (JSON files); a file may wrap one as {"request": ..., "expect": {status, fields, contains,
    regex}}. Every expectation is checked here, so a bad one is exit 2 naming its file, not a crash mid-deploy."""
    pattern = flow.deploy.smoke_tests if flow.deploy else None
    if not pattern:
        return []
    files = sorted(glob.glob(str(config.root / pattern)))
    if not files:
        raise UsageError(f"{config.doc.display}: smoke_tests '{pattern}' of flow '{flow.name}' matches no file")
    for file in files:  # a link among them to a file outside the project: its content is not the project's to send
        if not inside_project(config.root, Path(file)):
            raise UsageError(f"{display_path(Path(file))}: a smoke test of flow '{flow.name}' that leads out of the "
                             f"project folder {config.root}; replace the link with the file itself")
    return [_smoke_test(Path(file)) for file in files]


def _smoke_test(path: Path) -> SmokeTest:
    shown = display_path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{shown}: not a regular file; a smoke test is a JSON file")
        if info.st_size > SMOKE_MAX_BYTES:
            raise UsageError(f"{shown}: {info.st_size:,} bytes is too large for a smoke test (limit "
                             f"{SMOKE_MAX_BYTES:,})")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, a number over 4,300 digits
        raise UsageError(f"{shown}: not a JSON smoke test ({exc}); fix the JSON") from None
    except RecursionError:
        raise UsageError(f"{shown}: not a usable smoke test: nested too deeply") from None

    def bad(what: str) -> UsageError:
        return UsageError(f"{shown}: {what} (a smoke test is the request body, or {{\"request\": {{...}}, "
                          "\"expect\": {\"status\": 200, \"fields\": [...], \"contains\": \"...\", "
                          "\"regex\": \"...\"}})")

    if not isinstance(data, dict):
        raise bad("a smoke test must be a JSON object")
    if "request" not in data:
        return SmokeTest(path.name, data)
    extra = sorted(set(data) - {"request", "expect"})
    if extra:
        raise bad(f"unknown key '{extra[0]}' beside 'request' and 'expect'")
    request, expect = data["request"], data.get("expect", {})
    if not isinstance(request, dict):
        raise bad(f"'request' must be an object, not {describe(request)}")
    if not isinstance(expect, dict):
        raise bad(f"'expect' must be an object, not {describe(expect)}")
    for key in expect:
        if key not in _EXPECT_KEYS:
            raise bad(f"unknown expectation '{key}'; {did_you_mean(str(key), _EXPECT_KEYS)}")
    status = expect.get("status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise bad(f"'status' must be an HTTP status code like 200, not {status!r}"[:300])
    fields = expect.get("fields", [])
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise bad("'fields' must be a list of output names, like [\"answer\"]")
    for key in ("contains", "regex"):
        if key in expect and not isinstance(expect[key], str):
            raise bad(f"'{key}' must be a string, not {describe(expect[key])}")
    regex = expect.get("regex")
    if regex is not None:
        try:
            re.compile(regex)
        except (re.error, RecursionError, OverflowError) as exc:
            raise bad(f"'regex' is not a valid regular expression ({exc})") from None
    return SmokeTest(path.name, request, status, tuple(fields), expect.get("contains"), regex)
