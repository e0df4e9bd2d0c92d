"""Runs of Agent Framework flows (kind ``agent_framework``) on this machine, each in a child process (``maf_runner``).

The parent never imports the framework. It resolves what llmops-ci owns in a declarative file before the
framework sees it: ``=Env.NAME`` values from the run's environment, and ``connection: {kind: reference,
name: X}`` from the llmops.yaml connection X (so no PowerFx engine or .NET runtime is needed for those).
Every LLM call goes through the record/replay proxy on 127.0.0.1: a declarative model's endpoint is
replaced by a proxy route, and ``OPENAI_BASE_URL`` (what the framework's OpenAI clients read when a file or
Python code names no endpoint) points at another. The child tags each line's requests, so the proxy counts
each line's tokens from the responses it relays or replays.

``agent-framework-core`` requires an OpenTelemetry that prompt flow 1.18.5 refuses, so the framework may be
installed into a directory of its own (``pip install --target DIR agent-framework-core ...``) named by
``LLMOPS_CI_AGENTS_PATH``; it is put first on the child's ``PYTHONPATH`` only.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmops_ci.core.errors import CheckFailed, UsageError
from llmops_ci.core.progress import Progress
from llmops_ci.core.service_errors import service_failure
from llmops_ci.core.yamldoc import YamlDoc, load_yaml
from llmops_ci.engines.artifacts import LineResult
from llmops_ci.engines.mapping import base_run, mapped_inputs, mean_scores, read_rows
from llmops_ci.engines.plumbing import LocalEngine, count_lines, run_child, take_result, upstreams
from llmops_ci.kinds.agent_framework.spec import AgentFrameworkSpec
from llmops_ci.llm.cache import LlmRun, ProxyServer
from llmops_ci.llm.cassette import CacheSettings
from llmops_ci.results.records import (
    ProviderConnection,
    RunJob,
    RunRecord,
    TestJob,
    TestRecord,
    line_status,
)

if TYPE_CHECKING:
    from llmops_ci.engines.base import BackendContext
    from llmops_ci.kinds.base import FlowInfo

log = logging.getLogger("llmops_ci.maf")
POLL_S = 0.05
STARTUP_GRACE_S = 120.0  # importing the framework and building the agent, on a loaded machine
AGENTS_PATH = "LLMOPS_CI_AGENTS_PATH"
ENV_VALUE = re.compile(r"^=\s*Env\.([A-Za-z_][A-Za-z0-9_]*)\s*$")
KEY_ROUTE = "maf-key"  # a file's own `kind: key` endpoint (the route's name is part of the cassette key)
ENV_ROUTE = "env-openai_base_url"  # what OPENAI_BASE_URL stands for when nothing else names an endpoint
REPLAY_KEY = "llmops-ci-replay"  # clients insist on a key; a replay needs none
DEFAULT_OPENAI = "https://api.openai.com/v1"
NOT_INSTALLED = (
    "Microsoft Agent Framework is not installed for llmops-ci's agent runs. It cannot share prompt flow's environment "
    "(it needs a newer OpenTelemetry): install it into a folder of its own and name it, e.g.\n"
    "  python -m pip install --target .agents-site agent-framework-core==1.26.0 agent-framework-declarative==1.4.0 "
    f"agent-framework-openai==1.17.0\n  export {AGENTS_PATH}=$PWD/.agents-site\n"
    "(docs/migrating-to-agent-framework.md)")
LOAD_ERRORS = ("ImportError", "ModuleNotFoundError", "SyntaxError", "FileNotFoundError", "AttributeError",
               "DeclarativeLoaderError", "ValueError", "DeclarativeWorkflowError", "ProviderLookupError")


class Route(Protocol):
    """Where a connection's calls go: a run's proxy route (``LlmRun``), or the real endpoints when serving."""

    upstreams: dict[str, str | None]

    def url_for(self, name: str) -> str: ...


@dataclass(frozen=True)
class Target:
    """What the child runs: a resolved declarative file, or a Python entry."""

    kind: str  # agent | workflow | python
    request: dict[str, Any]
    structured: bool = False


def agents_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The child's environment: the run's, with the Agent Framework directory first on PYTHONPATH."""
    env = {**environ, "PYTHONUNBUFFERED": "1", "AGENT_FRAMEWORK_ENABLE_OTEL": "false"}
    extra = environ.get(AGENTS_PATH) or os.environ.get(AGENTS_PATH)
    if extra:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, environ.get("PYTHONPATH", "")) if p)
    return env


def _env_value(doc: YamlDoc, path: tuple[Any, ...], name: str, env: Mapping[str, str], lenient: bool) -> str:
    if name in env:
        return env[name]
    if lenient:
        return ""
    line, _ = doc.pos(*path)
    where = f"{doc.display}:{line}" if line else doc.display
    raise UsageError(f"{where}: =Env.{name} is not set; export {name} (or set it as a CI secret, or under the "
                     "flow's environment_variables in llmops.yaml) and run again")


def resolve_env(doc: YamlDoc, value: Any, env: Mapping[str, str], lenient: bool, path: tuple[Any, ...] = ()) -> Any:
    """``value`` with every ``=Env.NAME`` replaced by the variable's value (other PowerFx is left to the engine)."""
    if isinstance(value, dict):
        return {k: resolve_env(doc, v, env, lenient, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(doc, v, env, lenient, (*path, i)) for i, v in enumerate(value)]
    if isinstance(value, str):
        found = ENV_VALUE.match(value)
        if found:
            return _env_value(doc, path, found.group(1), env, lenient)
    return value


def _route_model(doc: YamlDoc, data: dict[str, Any], path: tuple[Any, ...], route: Route,
                 connections: Mapping[str, ProviderConnection], env: Mapping[str, str], lenient: bool) -> None:
    """Point the agent's model at the proxy (in place)."""
    model = data.get("model")
    if not isinstance(model, dict):
        return  # the framework's client reads OPENAI_BASE_URL, which points at the proxy
    conn = model.get("connection")
    where = f"{doc.display}:{doc.pos(*path, 'model', 'connection')[0] or doc.pos(*path, 'model')[0]}"
    if not isinstance(conn, dict):
        return
    kind = str(conn.get("kind") or "").lower()
    if kind == "reference":
        name = conn.get("name")
        chosen = connections.get(str(name))
        if chosen is None:
            raise UsageError(f"{where}: connection references '{name}', which is not declared under 'connections:' "
                             "in llmops.yaml; declare it (type open_ai or azure_open_ai)")
        if chosen.type not in ("open_ai", "azure_open_ai"):
            raise UsageError(f"{where}: connection '{name}' has type '{chosen.type}'; an agent's model needs an "
                             "open_ai or azure_open_ai connection")
        model["connection"] = {"kind": "key", "endpoint": route.url_for(chosen.name),
                               "key": chosen.values.get("api_key") or REPLAY_KEY}
        if chosen.type == "azure_open_ai" and chosen.values.get("api_version"):
            options = model.setdefault("options", {})
            if isinstance(options, dict):
                options.setdefault("apiVersion", chosen.values["api_version"])
        return
    if kind in ("key", "apikey"):
        provider = str(model.get("provider") or "OpenAI")
        endpoint = conn.get("endpoint") or (env.get("OPENAI_BASE_URL") or DEFAULT_OPENAI
                                            if provider.lower() == "openai" else None)
        if not endpoint:
            raise UsageError(f"{where}: a 'kind: key' connection of provider '{provider}' needs an endpoint to go "
                             "through llmops-ci's LLM proxy (record/replay and token counts); set endpoint, or name "
                             "an llmops.yaml connection: connection: {kind: reference, name: <connection>}")
        route.upstreams[KEY_ROUTE] = None if lenient and not conn.get("endpoint") and not conn.get("key") else str(
            endpoint)
        conn["endpoint"] = route.url_for(KEY_ROUTE)
        conn["key"] = conn.get("key") or REPLAY_KEY
        return
    raise UsageError(f"{where}: a '{conn.get('kind')}' connection cannot go through llmops-ci's LLM proxy "
                     "(record/replay and token counts); use 'kind: key' with an endpoint, or name an llmops.yaml "
                     "connection: connection: {kind: reference, name: <connection>}")


def declarative_target(info: FlowInfo, route: Route, connections: tuple[ProviderConnection, ...],
                       env: Mapping[str, str], lenient: bool) -> Target:
    """The declarative file (and, for a workflow, the agent files beside it) resolved and routed."""
    import yaml

    known = {c.name: c for c in connections}
    doc = load_yaml(info.definition)
    data = resolve_env(doc, doc.data, env, lenient)
    bindings = _bindings(info)
    if isinstance(data, dict) and data.get("kind") == "Workflow":
        agents = {}
        for name, path in sorted(workflow_agents(info).items()):
            adoc = load_yaml(path)
            adata = resolve_env(adoc, adoc.data, env, lenient)
            _route_model(adoc, adata, (), route, known, env, lenient)
            agents[name] = yaml.safe_dump(adata, sort_keys=False)
        config = {k: v for k, v in env.items() if k.isidentifier()}
        return Target("workflow", {"yaml": yaml.safe_dump(data, sort_keys=False), "agents": agents,
                                   "configuration": config, "bindings": bindings})
    assert isinstance(data, dict)
    _route_model(doc, data, (), route, known, env, lenient)
    structured = isinstance(data.get("outputSchema"), dict)
    return Target("agent", {"yaml": yaml.safe_dump(data, sort_keys=False), "bindings": bindings}, structured)


def _bindings(info: FlowInfo) -> str | None:
    for dep in info.dependencies:
        if dep.label == "tool bindings":
            return str(dep.path)
    return None


def workflow_agents(info: FlowInfo) -> dict[str, Path]:
    """The declarative agents beside a workflow file, by their ``name:``."""
    from llmops_ci.kinds.agent_framework.facts import agent_files

    return agent_files(info.definition.parent)


class MafLocal(LocalEngine):
    """Runs of ``agent_framework`` flows in Microsoft Agent Framework, one child process per run."""

    def __init__(self, state_dir: Path, environ: Mapping[str, str] | None = None,
                 entries: Mapping[Path, tuple[Path, str]] | None = None) -> None:
        super().__init__(state_dir, environ)
        self.entries = dict(entries or {})  # flow path -> (code file, attribute) of a Python entry
        self._lock = threading.Lock()
        self._proxy: ProxyServer | None = None
        atexit.register(self.close)

    def _start(self) -> ProxyServer:
        with self._lock:
            if self._proxy is None:
                self._proxy = ProxyServer().start()
            return self._proxy

    def close(self) -> None:
        with self._lock:
            if self._proxy is not None:
                self._proxy.stop()
                self._proxy = None

    def _target(self, flow: Path, info: FlowInfo, route: LlmRun, connections: tuple[ProviderConnection, ...],
                env: Mapping[str, str], lenient: bool) -> Target:
        entry = self.entries.get(flow.absolute()) or self.entries.get(info.folder.absolute())
        if entry is not None:
            code, attr = entry
            return Target("python", {"code": str(code), "attr": attr, "cwd": str(code.parent)},
                          structured=False)
        return declarative_target(info, route, connections, env, lenient)

    def _execute(self, name: str, flow: Path, info: FlowInfo, todo: list[tuple[int, dict[str, Any]]],
                 cache: CacheSettings | None, connections: tuple[ProviderConnection, ...], env_vars: Mapping[str, str],
                 workers: int, timeout: float, tick: Callable[[int], None] | None = None
                 ) -> tuple[list[LineResult], LlmRun]:
        proxy = self._start()
        settings = cache or CacheSettings("off", self.state_dir / "work" / f"{name}.cassette.json")
        env = {**self.environ, **env_vars}
        lenient = cache is not None
        ups = upstreams(connections)
        ups[ENV_ROUTE] = None if lenient and not env.get("OPENAI_API_KEY") else (
            env.get("OPENAI_BASE_URL") or DEFAULT_OPENAI)
        route = proxy.open_run(name, settings, ups, max(1.0, timeout * 0.9))
        try:
            target = self._target(flow, info, route, connections, env, lenient)
            child_env = {**env, "OPENAI_BASE_URL": route.url_for(ENV_ROUTE),
                         "OPENAI_API_KEY": env.get("OPENAI_API_KEY") or REPLAY_KEY}
            records = self._child(name, {**target.request, "target": target.kind, "todo": todo, "workers": workers,
                                         "line_timeout": timeout, "structured": target.structured, "tag": name},
                                  agents_environment(child_env), tick)
        finally:
            route.close()
        lines = []
        for raw in records:
            number = int(raw["line"])
            tokens = route.tokens(number) or {}
            if not any(tokens.values()):
                tokens = dict(raw.get("tokens") or {})
            failed = raw.get("status") != "Completed"
            lines.append(LineResult(
                line=number, status=line_status(raw["status"], "Agent Framework"), inputs=dict(raw.get("inputs") or {}),
                outputs=raw.get("outputs"), duration_s=raw.get("duration_s"), tokens=tokens, error=raw.get("error"),
                error_code=raw.get("error_code"), node=None,
                service_failure=(route.failure(number) or (service_failure(raw["error_detail"])
                                 if isinstance(raw.get("error_detail"), dict) else None)) if failed else None))
        return lines, route

    def _child(self, name: str, request: dict[str, Any], env: dict[str, str],
               tick: Callable[[int], None] | None) -> list[dict[str, Any]]:
        work = self.state_dir / "work" / "maf"
        work.mkdir(parents=True, exist_ok=True)
        result, lines_file = work / f"{name}.result.json", work / f"{name}.lines.jsonl"
        result.unlink(missing_ok=True)
        lines_file.unlink(missing_ok=True)
        request = {**request, "result": str(result), "lines": str(lines_file)}
        seen = {"done": 0, "moved": time.monotonic()}
        stall = float(request.get("line_timeout") or 300) + STARTUP_GRACE_S

        def watch() -> bool:
            count = count_lines(lines_file)
            if count != seen["done"]:
                seen["done"], seen["moved"] = count, time.monotonic()
                if tick:
                    tick(count)
            # a line that blocks the event loop (synchronous code) cannot be cancelled from inside
            return time.monotonic() - seen["moved"] <= stall

        exited = run_child("llmops_ci.engines.agent_framework.runner", request, cwd=work, env=env,
                           log_path=self.state_dir / "logs" / f"maf-{name}.log", watch=watch, poll_s=POLL_S)
        if exited.stopped and not result.is_file():
            return _abandoned(request, lines_file, stall)
        lines_file.unlink(missing_ok=True)
        outcome = take_result(result)
        if outcome is None:
            if "No module named 'agent_framework" in exited.tail():
                raise UsageError(NOT_INSTALLED)
            raise exited.no_result("Agent Framework")
        if outcome.get("status") != "Completed":
            log.debug("%s", outcome.get("traceback"))
            message = f"Agent Framework could not load or run the flow: {outcome.get('error')}"
            if outcome.get("error_code") == "ModuleNotFoundError" and "'agent_framework" in str(outcome.get("error")):
                raise UsageError(NOT_INSTALLED)
            if outcome.get("error_code") in LOAD_ERRORS:
                raise UsageError(message + "; run 'llmops-ci lint' on it")
            raise CheckFailed(message)
        return list(outcome["lines"])

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        base = base_run(self.bases, job.base_run) if job.base_run else None
        todo = mapped_inputs(job.info, job.column_mapping, read_rows(job.data), base, job.label)
        started = time.monotonic()
        lines, route = self._execute(job.name, job.path, job.info, todo, job.cache, job.provider_connections,
                                     job.environment_variables, job.options.workers, float(job.options.line_timeout),
                                     progress.update)
        progress.finish(len(lines))
        self.ran(job, route, log)
        metrics = mean_scores(lines) if job.base_run else {}
        return RunRecord(job.flow, job.name, "Completed", lines, time.monotonic() - started, metrics, None,
                         route.stats.to_json() if job.cache is not None else None, data_lines=len(todo),
                         evaluation=job.evaluation)

    def test(self, job: TestJob) -> TestRecord:
        name = f"test_{os.getpid()}_{time.time_ns()}"
        started = time.monotonic()
        lines, _ = self._execute(name, job.path, job.info, [(0, dict(job.inputs))], job.cache,
                                 job.provider_connections, job.environment_variables, 1, 300.0)
        line = lines[0]
        return TestRecord(line.status, line.outputs, line.error, [], time.monotonic() - started)


def _abandoned(request: dict[str, Any], lines_file: Path, stall: float) -> list[dict[str, Any]]:
    """The lines a stalled runner finished, and every other line failed as timed out."""
    finished = {}
    if lines_file.is_file():
        for raw in lines_file.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                record = json.loads(raw)
                finished[int(record["line"])] = record
    lines_file.unlink(missing_ok=True)
    out = []
    for number, inputs in request["todo"]:
        out.append(finished.get(int(number)) or {
            "line": number, "inputs": inputs, "status": "Failed", "outputs": None, "tokens": {},
            "error_code": "LineExecutionTimeoutError", "duration_s": None,
            "error": f"Line {number} did not finish: the Agent Framework runner answered nothing for {int(stall)} s "
                     "(a line blocking its event loop past --line-timeout, e.g. a synchronous call in async code); "
                     "it was stopped"})
    return out


def from_context(ctx: BackendContext) -> MafLocal:
    """The factory for engine ``agent_framework`` of the local backend."""
    entries: dict[Path, tuple[Path, str]] = {}
    for flow in ctx.project.config.flows.values():
        spec = flow.block(AgentFrameworkSpec)
        if spec is not None and spec.code is not None:  # a block with only bindings: is a declarative flow
            entries[flow.path.absolute()] = (spec.code, spec.attr)
    return MafLocal(ctx.state_dir, ctx.environ, entries)

