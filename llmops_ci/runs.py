"""Batch, evaluation and single-line runs: what to run (jobs), what came out (records), where it is kept.

Jobs and records are the same whatever the flow kind and the backend: a backend turns a ``RunJob``
into a ``RunRecord`` of ``LineResult``s.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_ci.config import ENV_REF, Config, FlowSpec, Origin
from llmops_ci.errors import ConfigError, Problem, UsageError
from llmops_ci.kinds import FlowInfo
from llmops_ci.lint.findings import ERROR
from llmops_ci.lint.project import LintRequest, lint
from llmops_ci.llm_cache import CacheSettings
from llmops_ci.project import Project
from llmops_ci.schema import as_dict
from llmops_ci.state import read_summary, write_json_atomic

SECRET_FIELDS = ("api_key", "secrets")
MAX_ERRORS = 5
# LLM endpoint failures: when every line fails with one of these, the service is down (exit 3).
SERVICE_ERRORS = ("APIConnectionError", "APITimeoutError", "InternalServerError", "RateLimitError",
                  "ServiceUnavailableError", "OpenAIError")


@dataclass
class LineResult:
    line: int
    status: str
    inputs: dict[str, Any]
    outputs: Any
    duration_s: float | None
    tokens: dict[str, int]
    error: str | None = None
    error_code: str | None = None
    node: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "status": self.status, "inputs": self.inputs, "outputs": self.outputs,
                "duration_s": self.duration_s, "tokens": self.tokens, "error": self.error, "node": self.node}


@dataclass(frozen=True)
class RunOptions:
    workers: int = 4
    line_timeout: int = 300
    llm_cache: str | None = None  # overrides llmops.yaml's llm_cache.mode


def cache_settings(config: Config, label: str, override: str | None) -> CacheSettings | None:
    mode = override or config.llm_cache.mode
    if mode == "off":
        return None
    return CacheSettings(mode, config.cassettes / (label.replace("/", ".") + ".json"))


@dataclass(frozen=True)
class ProviderConnection:
    name: str
    type: str
    values: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class RunJob:
    label: str  # "classify" or "classify/accuracy"
    name: str  # unique run name within the private home
    flow: Path
    info: FlowInfo  # what the flow's kind found in it (and how to snapshot it)
    data: Path
    column_mapping: dict[str, Any]
    variant: str | None
    connections: dict[str, dict[str, Any]]
    environment_variables: dict[str, str]
    provider_connections: tuple[ProviderConnection, ...]
    options: RunOptions
    base_run: str | None = None
    cache: CacheSettings | None = None


@dataclass(frozen=True)
class TestJob:
    __test__ = False  # not a pytest class

    flow: Path
    info: FlowInfo
    inputs: dict[str, Any]
    variant: str | None
    connections: dict[str, dict[str, Any]]
    environment_variables: dict[str, str]
    provider_connections: tuple[ProviderConnection, ...]
    cache: CacheSettings | None = None


@dataclass
class TestRecord:
    __test__ = False

    status: str
    output: Any
    error: str | None
    nodes: list[dict[str, Any]]
    duration_s: float | None


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class RunRecord:
    label: str
    name: str
    status: str  # the backend's word for how the run as a whole ended: Completed, Failed, Canceled
    lines: list[LineResult]
    duration_s: float
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    llm_cache: dict[str, Any] | None = None

    @property
    def lines_total(self) -> int:
        return len(self.lines)

    @property
    def failed(self) -> list[LineResult]:
        return [line for line in self.lines if line.status != "Completed"]

    @property
    def tokens(self) -> dict[str, int]:
        return {k: sum(line.tokens.get(k, 0) for line in self.lines) for k in ("prompt", "completion", "total")}

    def latency(self, q: float) -> float | None:
        value = percentile([line.duration_s for line in self.lines if line.duration_s is not None], q)
        return round(value, 3) if value is not None else None

    def service_down(self) -> bool:
        return bool(self.lines) and len(self.failed) == len(self.lines) and all(
            line.error_code in SERVICE_ERRORS and line.error and "Error code: 4" not in line.error
            for line in self.failed)

    def summary(self, allowed_failures: int | None) -> dict[str, Any]:
        failed = len(self.failed)
        ok = self.status == "Completed" and (allowed_failures is None or failed <= allowed_failures)
        out: dict[str, Any] = {
            "name": self.name, "status": "completed" if ok else "failed", "lines_total": self.lines_total,
            "lines_failed": failed, "duration_s": round(self.duration_s, 3),
            "latency_p50": self.latency(0.5), "latency_p95": self.latency(0.95), "tokens": self.tokens,
            "errors": [{"line": line.line, "node": line.node, "message": line.error}
                       for line in self.failed[:MAX_ERRORS]],
        }
        if self.error:
            out["error"] = self.error
        if self.llm_cache:
            out["llm_cache"] = self.llm_cache
        return out


# --- what to run ---------------------------------------------------------------------------------

def run_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", label) + time.strftime("_%Y%m%d_%H%M%S_") + secrets.token_hex(3)


def preflight(project: Project, flows: list[FlowSpec]) -> None:
    """Everything lint can tell before a run: a broken mapping or flow is exit 2 before anything starts."""
    report = lint(LintRequest(config=project.config.path, flows=tuple(f.name for f in flows)), project)
    errors = [f for f in report.findings if f.severity == ERROR]
    if errors:
        raise ConfigError([Problem(f.path, f.line, f.column, f"{f.message} [{f.rule}]", f.rule) for f in errors])


def _require_env(origin: Origin, sub: tuple[Any, ...], value: Any, environ: Mapping[str, str],
                 problems: list[Problem] | None) -> Any:
    """``${env:NAME}`` resolved; unset names are problems, or empty when ``problems`` is None (replay)."""
    if isinstance(value, dict):
        return {k: _require_env(origin, (*sub, k), v, environ, problems) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    for name in ENV_REF.findall(value):
        if name not in environ and problems is not None:
            problems.append(origin.problem(sub, f"environment variable {name} is not set; export {name} (or set it "
                                           "as a CI secret) and run again", "env-unset"))
    return ENV_REF.sub(lambda m: environ.get(m.group(1), ""), value)


def used_connections(config: Config, info: FlowInfo | None, overrides: dict[str, dict[str, Any]]) -> set[str]:
    names = {v["connection"] for v in overrides.values() if isinstance(v.get("connection"), str)}
    if info is not None:
        for use in info.connections:
            name = overrides.get(use.node, {}).get(use.field, use.connection)
            if isinstance(name, str):
                names.add(name)
    return {n for n in names if n in config.connections}


def provider_connections(config: Config, names: set[str], environ: Mapping[str, str], *,
                         lenient: bool = False) -> tuple[ProviderConnection, ...]:
    """The declared connections a run needs, with ``${env:...}`` resolved; unset names are exit 2.

    ``lenient`` (replaying LLM calls) leaves unset names empty: a cassette needs no endpoint or key.
    """
    problems: list[Problem] = []
    out = []
    for name in sorted(names):
        conn = config.connections[name]
        origin = Origin(config.doc, ("connections", name))
        values = {k: _require_env(origin, (k,), v, environ, None if lenient else problems)
                  for k, v in conn.values.items()}
        out.append(ProviderConnection(name, conn.type, values))
    if problems:
        raise ConfigError(problems)
    return tuple(out)


def resolve_values(origin: Origin, values: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Settings under ``origin`` with ``${env:...}`` resolved; unset names are exit 2 naming file and line."""
    problems: list[Problem] = []
    out = {str(k): str(_require_env(origin, (k,), v, environ, problems)) for k, v in values.items()}
    if problems:
        raise ConfigError(problems)
    return out


def environment(origin: Origin, values: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """A run's ``environment_variables`` (written under ``origin``), resolved."""
    return resolve_values(Origin(origin.doc, (*origin.prefix, "environment_variables"), origin.renames), values,
                          environ)


def secret_values(connections: tuple[ProviderConnection, ...]) -> list[str]:
    out: list[str] = []
    for conn in connections:
        for key in SECRET_FIELDS:
            value = conn.values.get(key)
            if isinstance(value, str):
                out.append(value)
            elif isinstance(value, dict):
                out += [str(v) for v in value.values()]
    return [v for v in out if v]


def flow_info(project: Project, path: Path) -> FlowInfo:
    info = project.info(path)
    if info is None:  # preflight lint reports it first; this guards library callers that skip it
        raise UsageError(f"{path}: not a flow that llmops-ci can run (no flow kind recognises it)")
    return info


def batch_job(project: Project, flow: FlowSpec, options: RunOptions, environ: Mapping[str, str], *,
              local_connections: bool = True) -> RunJob:
    """``local_connections=False``: the backend uses its own connections by name (Azure ML's), so the declared
    ones are neither resolved nor required."""
    config = project.config
    if flow.data is None:
        raise UsageError(f"{flow.origin.doc.display}: flow '{flow.name}' has no 'data:' to run over")
    cache = cache_settings(config, flow.name, options.llm_cache)
    info = flow_info(project, flow.path)
    return RunJob(
        label=flow.name, name=run_name(flow.name), flow=flow.path, info=info, data=flow.data,
        column_mapping=flow.column_mapping, variant=flow.variant, connections=flow.connections,
        environment_variables=environment(flow.where("environment_variables"), flow.environment_variables, environ),
        provider_connections=provider_connections(config, used_connections(config, info, flow.connections),
                                                  environ, lenient=cache is not None) if local_connections else (),
        options=options, base_run=flow.base_run, cache=cache)


def eval_jobs(project: Project, flow: FlowSpec, base_run: str, options: RunOptions,
              environ: Mapping[str, str], *, local_connections: bool = True) -> list[RunJob]:
    config = project.config
    jobs = []
    for evaluation in flow.evaluations.values():
        data = evaluation.data or flow.data
        assert data is not None
        cache = cache_settings(config, f"{flow.name}/{evaluation.name}", options.llm_cache)
        info = flow_info(project, evaluation.path)
        jobs.append(RunJob(
            label=f"{flow.name}/{evaluation.name}", name=run_name(f"{flow.name}_{evaluation.name}"),
            flow=evaluation.path, info=info, data=data, column_mapping=evaluation.column_mapping, variant=None,
            connections=evaluation.connections,
            environment_variables=environment(evaluation.origin, evaluation.environment_variables, environ),
            provider_connections=provider_connections(
                config, used_connections(config, info, evaluation.connections), environ,
                lenient=cache is not None) if local_connections else (),
            options=options, base_run=base_run, cache=cache))
    return jobs


# --- where results are kept ------------------------------------------------------------------------

def run_dir(state_dir: Path, label: str) -> Path:
    flow, _, evaluation = label.partition("/")
    return state_dir / "runs" / flow / ("evals/" + evaluation if evaluation else "")


def save_run(state_dir: Path, record: RunRecord, allowed_failures: int | None) -> dict[str, Any]:
    folder = run_dir(state_dir, record.label)
    folder.mkdir(parents=True, exist_ok=True)
    summary = record.summary(allowed_failures)
    if record.metrics:
        summary["metrics"] = record.metrics
    write_json_atomic(folder / "run.json", summary)
    tmp = folder / "lines.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as fh:
        for line in record.lines:
            fh.write(json.dumps(line.to_json(), default=str) + "\n")
    tmp.replace(folder / "lines.jsonl")
    return summary


def load_run(state_dir: Path, label: str) -> dict[str, Any] | None:
    path = run_dir(state_dir, label) / "run.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: unreadable ({exc}); run batch-run again") from None
    return data if isinstance(data, dict) else None


def mark_unchanged(state_dir: Path, flow: str, since: str, reasons_elsewhere: str | None,
                   baseline_dir: Path | None) -> bool:
    """Record that ``flow`` was not run; carry its results over from the baseline state dir when there are any."""
    carried = False
    if baseline_dir is not None and (baseline_dir / "summary.json").is_file():
        base_flow = as_dict(as_dict(read_summary(baseline_dir).get("flows")).get(flow))
        for key in ("run", "evaluations"):
            if key in base_flow:
                update_flow_summary(state_dir, flow, key, base_flow[key])
                carried = True
        source = baseline_dir / "runs" / flow
        if source.is_dir():
            shutil.copytree(source, state_dir / "runs" / flow, dirs_exist_ok=True)
    update_flow_summary(state_dir, flow, "unchanged", {"since": since, "carried_over": carried,
                                                       "baseline": str(baseline_dir) if carried else None})
    return carried


def update_flow_summary(state_dir: Path, flow: str, key: str, value: Any) -> None:
    data = read_summary(state_dir)
    flows = data.setdefault("flows", {})
    entry = flows.setdefault(flow, {})
    if key == "evaluations":
        entry.setdefault("evaluations", {}).update(value)
    else:
        entry[key] = value
    write_json_atomic(state_dir / "summary.json", data)
