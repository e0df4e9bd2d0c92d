"""Batch, evaluation and single-line runs: what to run (jobs) and what came out (records); store.py keeps them.

Jobs and records are the same whatever the flow kind and the backend: a backend turns a ``RunJob``
into a ``RunRecord`` of ``LineResult``s.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from llmops_ci.config import ENV_REF, Config, FlowSpec, Origin, connection_ref, connection_value
from llmops_ci.core import redaction
from llmops_ci.core.child_env import ci_credential_refs, ci_token_message
from llmops_ci.core.errors import ConfigError, Problem, UsageError
from llmops_ci.core.yamldoc import display_path
from llmops_ci.kinds.base import FlowInfo
from llmops_ci.llm.cassette import CacheSettings
from llmops_ci.llm.cassette_diff import CacheBase, provenance
from llmops_ci.project.data import DataInfo
from llmops_ci.project.evaluators import evaluation_info
from llmops_ci.project.loaded import Project

log = logging.getLogger("llmops_ci.run")
SECRET_FIELDS = ("api_key", "secrets")
MAX_ERRORS = 5

# prompt flow's words (promptflow.contracts.run_info.Status) for how a line ended; every engine and Azure ML's run
# history use them, and lines.jsonl keeps them as they came
LineStatus = Literal["Completed", "Failed", "Canceled", "Bypassed", "NotStarted", "Running", "Preparing",
                     "CancelRequested"]
# how a run as a whole ended: the terminal words of prompt flow's run status (what Azure ML waits for)
RunStatus = Literal["Completed", "Failed", "Canceled"]
LINE_STATUSES: tuple[LineStatus, ...] = get_args(LineStatus)
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)


def line_status(word: object, source: str) -> LineStatus:
    """A line's status as ``source`` (an engine's child, a service) wrote it; any other word than prompt flow's is a
    failed line, as every word but Completed always counted."""
    for known in LINE_STATUSES:
        if word == known:
            return known
    log.warning("%s gave a line the status %r, which is not prompt flow's; counted as Failed", source, word)
    return "Failed"


def run_status(word: object, source: str) -> RunStatus:
    """How a run ended as ``source`` reported it; a word that is not a terminal one is a failed run."""
    for known in RUN_STATUSES:
        if word == known:
            return known
    log.warning("%s reported the run as %r, not as Completed, Failed or Canceled; counted as Failed", source, word)
    return "Failed"


@dataclass
class LineResult:
    line: int  # the line's index in the data (prompt flow's line_number, 0-based); shown 1-based
    status: LineStatus
    inputs: dict[str, Any]
    outputs: Any
    duration_s: float | None
    tokens: dict[str, int]
    error: str | None = None
    error_code: str | None = None
    node: str | None = None
    service_failure: str | None = None  # see SERVICE_FAILURES
    repeat: int | None = None  # with flow ``repeats:``: which run of the data line this is (0-based)

    def to_json(self) -> dict[str, Any]:
        # ``line`` is prompt flow's 0-based line_number (what pairs runs); ``line_number`` the 1-based data row that
        # every log line, summary.json and the comment name (docs/runs.md)
        return {"line": self.line, "line_number": self.line + 1, "status": self.status, "inputs": self.inputs,
                "outputs": self.outputs, "duration_s": self.duration_s, "tokens": self.tokens, "error": self.error,
                "node": self.node, "service_failure": self.service_failure,
                **({"repeat": self.repeat} if self.repeat is not None else {})}


@dataclass(frozen=True)
class RunOptions:
    workers: int = 4
    line_timeout: int = 300
    llm_cache: str | None = None  # overrides llmops.yaml's llm_cache.mode
    cache_base: CacheBase | None = None  # what cassettes are compared with (recorded_in_change, base-only replay)


def cache_settings(config: Config, flow: str, override: str | None, base: CacheBase | None = None, *,
                   evaluation: str | None = None) -> CacheSettings | None:
    mode = override or config.llm_cache.mode
    if mode == "off":
        return None
    cassette = config.cassettes / (f"{flow}.{evaluation}.json" if evaluation else f"{flow}.json")
    return CacheSettings(mode, cassette, provenance(cassette, base) if base is not None else None)


@dataclass(frozen=True)
class ProviderConnection:
    name: str
    type: str
    values: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class RunJob:
    flow: str  # the flow's name in llmops.yaml (for an evaluation, the flow it scores)
    name: str  # unique run name within the private home
    path: Path  # what runs: the flow's (or the evaluation's) folder or file
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
    init: dict[str, Any] = field(default_factory=dict)  # a flex class entry's __init__ arguments, resolved
    evaluator: str | None = None  # module:attr of an evaluator/scorer evaluation (info.kind says which)
    evaluation: str | None = None  # the evaluation's name when the job scores the flow's run

    @property
    def label(self) -> str:
        """How logs, cassettes and the state dir name the job: ``classify`` or ``classify/accuracy``."""
        return f"{self.flow}/{self.evaluation}" if self.evaluation else self.flow


@dataclass(frozen=True)
class TestJob:
    __test__ = False  # not a pytest class

    path: Path
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

    status: LineStatus
    output: Any
    error: str | None
    nodes: list[dict[str, Any]]
    duration_s: float | None
    tokens: dict[str, int] | None = None  # the line's LLM calls as the proxy counted them (all nodes together)


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
    flow: str  # the flow's name in llmops.yaml (for an evaluation, the flow it scores)
    name: str
    status: RunStatus
    lines: list[LineResult]
    duration_s: float
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    llm_cache: dict[str, Any] | None = None
    data_lines: int | None = None  # how many lines the data has (a run that fails as a whole reports none)
    line_numbers: list[int] | None = None  # the data lines (0-based) the run was to produce, when known
    repeats: int = 1  # each data line ran this many times (its records carry ``repeat``)
    evaluation: str | None = None  # the evaluation's name when the run scored the flow's run

    @property
    def label(self) -> str:
        """How logs name the run: ``classify`` or ``classify/accuracy``."""
        return f"{self.flow}/{self.evaluation}" if self.evaluation else self.flow

    @property
    def lines_total(self) -> int:
        """Data lines: with repeats, a line counts once however many times it ran."""
        return max(len(self.lines) if self.repeats == 1 else len({line.line for line in self.lines}),
                   self.data_lines or 0)

    @property
    def failed(self) -> list[LineResult]:
        return [line for line in self.lines if line.status != "Completed"]

    @property
    def failed_as_a_whole(self) -> bool:
        """The run ended without running its lines (a tool that cannot import, no data): not a line's fault."""
        return self.status != "Completed" and (not self.lines or len(self.lines) < self.lines_total)

    @property
    def lines_failed(self) -> int:
        """Failed lines; when the run failed as a whole, every line it did not complete. With repeats, a data line
        fails when any of its runs failed (or did not run)."""
        if self.repeats > 1:
            done = Counter(line.line for line in self.lines if line.status == "Completed")
            return self.lines_total - sum(1 for count in done.values() if count == self.repeats)
        if self.failed_as_a_whole:
            return self.lines_total - (len(self.lines) - len(self.failed))
        return len(self.failed)

    @property
    def tokens(self) -> dict[str, int]:
        return {k: sum(line.tokens.get(k, 0) for line in self.lines) for k in ("prompt", "completion", "total")}

    def latency(self, q: float) -> float | None:
        value = percentile([line.duration_s for line in self.lines if line.duration_s is not None], q)
        return round(value, 3) if value is not None else None

    def service_down(self) -> str | None:
        """The outside-service failure every line failed with (exit 3), or None."""
        if not self.lines or len(self.failed) != len(self.lines):
            return None
        classes = {line.service_failure for line in self.failed}
        return classes.pop() if len(classes) == 1 and None not in classes else (
            "outside service failures" if None not in classes else None)

    def summary(self, allowed_failures: int | None) -> dict[str, Any]:
        failed = self.lines_failed
        ok = self.status == "Completed" and (allowed_failures is None or failed <= allowed_failures)
        ok = ok and (self.lines_total == 0 or failed < self.lines_total)  # a run whose every line failed never passes
        out: dict[str, Any] = {
            "name": self.name, "status": "completed" if ok else "failed", "lines_total": self.lines_total,
            "lines_failed": failed, "duration_s": round(self.duration_s, 3),
            "latency_p50": self.latency(0.5), "latency_p95": self.latency(0.95), "tokens": self.tokens,
            # 1-based, like lint's line numbers: line 1 is the data's first line
            "errors": [{"line": line.line + 1, "node": line.node, "message": line.error,
                        **({"repeat": line.repeat + 1} if line.repeat is not None else {})}
                       for line in self.failed[:MAX_ERRORS]],
        }
        if self.repeats > 1:
            out["repeats"] = self.repeats
        if self.error:
            out["error"] = self.error
        if self.llm_cache:
            out["llm_cache"] = self.llm_cache
        return out


# --- what to run ---------------------------------------------------------------------------------

def run_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", label) + time.strftime("_%Y%m%d_%H%M%S_") + secrets.token_hex(3)


def _require_env(origin: Origin, sub: tuple[Any, ...], value: Any, environ: Mapping[str, str],
                 problems: list[Problem] | None) -> Any:
    """``${env:NAME}`` resolved; unset names are problems, or empty when ``problems`` is None (replay)."""
    if isinstance(value, dict):
        return {k: _require_env(origin, (*sub, k), v, environ, problems) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    refused = ci_credential_refs(value)
    if refused:  # even when replaying: a flow never gets the CI's own token
        raise ConfigError([origin.problem(sub, ci_token_message(refused[0]), "ci-token-ref")])
    for name in ENV_REF.findall(value):
        if name not in environ and problems is not None:
            problems.append(origin.problem(sub, f"environment variable {name} is not set; export {name} (or set it "
                                           "as a CI secret) and run again", "env-unset"))
    return ENV_REF.sub(lambda m: environ.get(m.group(1), ""), value)


def used_connections(config: Config, info: FlowInfo | None, overrides: dict[str, dict[str, Any]],
                     environment_variables: dict[str, Any] | None = None) -> set[str]:
    """The declared connections a run needs: its nodes' (after overrides) and those its environment variables
    (the run's and the flow file's own) read as ``${connection.field}``."""
    names = {v["connection"] for v in overrides.values() if isinstance(v.get("connection"), str)}
    for value in [*(environment_variables or {}).values(), *(info.environment_variables.values() if info else ())]:
        ref = connection_ref(value)
        if ref is not None:
            names.add(ref[0])
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


def resolve_values(origin: Origin, values: dict[str, Any], environ: Mapping[str, str], *,
                   lenient: bool = False) -> dict[str, str]:
    """Settings under ``origin`` with ``${env:...}`` resolved; unset names are exit 2 naming file and line
    (``lenient``: left empty, for a replayed run that makes no live call)."""
    problems: list[Problem] = []
    out = {str(k): str(_require_env(origin, (k,), v, environ, None if lenient else problems))
           for k, v in values.items()}
    if problems:
        raise ConfigError(problems)
    return out


def environment(origin: Origin, values: dict[str, Any], environ: Mapping[str, str],
                connections: tuple[ProviderConnection, ...] = (), *, lenient: bool = False) -> dict[str, str]:
    """A run's ``environment_variables`` (written under ``origin``), resolved: ``${env:NAME}`` from the
    environment, ``${connection.field}`` from the run's connections as prompt flow does (their secrets are
    registered for masking with the connections)."""
    out = resolve_values(Origin(origin.doc, (*origin.prefix, "environment_variables"), origin.renames), values,
                         environ, lenient=lenient)
    return resolve_connection_refs(out, connections)


def resolve_connection_refs(values: dict[str, str], connections: tuple[ProviderConnection, ...]) -> dict[str, str]:
    """``${connection.field}`` values replaced by that field of the named connection (others left as they are)."""
    by_name = {c.name: c for c in connections}
    out = dict(values)
    for var, raw in values.items():
        ref = connection_ref(raw)
        conn = by_name.get(ref[0]) if ref else None
        if ref and conn is not None:
            value = connection_value(conn.values, conn.type, ref[1])
            if value is not None and value != "":  # empty (replaying offline): left for the backend (the proxy)
                out[var] = str(value)
    return out


def init_connections(config: Config, init: dict[str, Any]) -> set[str]:
    """Declared connections an ``init:`` model configuration names (``{connection: openai, ...}``)."""
    return {v["connection"] for v in init.values()
            if isinstance(v, dict) and isinstance(v.get("connection"), str) and v["connection"] in config.connections}


def init_arguments(origin: Origin, values: dict[str, Any], environ: Mapping[str, str], *,
                   lenient: bool = False) -> dict[str, Any]:
    """A flex class entry's ``init:`` (written under ``origin``) with ``${env:...}`` resolved anywhere in it (a
    model configuration's endpoint, say); values that are not text (numbers, lists) stay as written."""
    problems: list[Problem] = []
    out = {str(k): _require_env(origin, ("init", k), v, environ, None if lenient else problems)
           for k, v in values.items()}
    if problems:
        raise ConfigError(problems)
    for value in out.values():  # a key or token given through init is a secret like a connection's
        if isinstance(value, dict):
            for key, item in value.items():
                if redaction.is_secret_name(str(key)):
                    redaction.add(item)
    return out


def warn_shadowed_defaults(label: str, info: FlowInfo, mapping: dict[str, Any], data: DataInfo) -> None:
    """Prompt flow runs an unmapped input that has a default on that default, even when the data has a column of the
    same name; so do these runs (their answers are prompt flow's), and they say so where a reader of the log sees it."""
    for name in info.shadowed_defaults(mapping, data.columns):
        log.warning("%s: input '%s' runs on its default on every line, as prompt flow runs it, although %s has a "
                    "'%s' column: add '%s: ${data.%s}' to column_mapping to run it on the column", label, name,
                    display_path(data.path), name, name, name)


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


def user_paths(text: str | None, private: list[Path], flow: Path) -> str | None:
    """``text`` (an executor's message) with the private copies of a flow named as the user's flow folder."""
    if not text:
        return text
    shown = display_path(flow)
    for folder in private:
        text = text.replace(str(folder.absolute()), shown)
    return text


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
    cache = cache_settings(config, flow.name, options.llm_cache, options.cache_base)
    info = flow_info(project, flow.path)
    warn_shadowed_defaults(flow.name, info, flow.column_mapping, project.data(flow.data))
    connections = provider_connections(config, used_connections(config, info, flow.connections,
                                                                flow.environment_variables) | init_connections(
                                           config, flow.init),
                                       environ, lenient=cache is not None) if local_connections else ()
    return RunJob(
        flow=flow.name, name=run_name(flow.name), path=flow.path, info=info, data=flow.data,
        column_mapping=flow.column_mapping,
        variant=flow.variant, connections=flow.connections,
        environment_variables=environment(flow.where("environment_variables"), flow.environment_variables, environ,
                                          connections, lenient=cache is not None),
        provider_connections=connections, options=options, base_run=flow.base_run, cache=cache,
        init=init_arguments(flow.where("init"), flow.init, environ, lenient=cache is not None))


def eval_jobs(project: Project, flow: FlowSpec, base_run: str, options: RunOptions,
              environ: Mapping[str, str], *, local_connections: bool = True) -> list[RunJob]:
    config = project.config
    jobs = []
    for evaluation in flow.evaluations.values():
        data = evaluation.data or flow.data
        assert data is not None
        label = f"{flow.name}/{evaluation.name}"
        cache = cache_settings(config, flow.name, options.llm_cache, options.cache_base, evaluation=evaluation.name)
        info = evaluation_info(evaluation, config.root) if evaluation.ref else flow_info(project, evaluation.path)
        warn_shadowed_defaults(label, info, evaluation.column_mapping, project.data(data))
        connections = provider_connections(
            config, used_connections(config, info, evaluation.connections, evaluation.environment_variables)
            | init_connections(config, evaluation.init), environ,
            lenient=cache is not None) if local_connections else ()
        jobs.append(RunJob(
            flow=flow.name, evaluation=evaluation.name, name=run_name(f"{flow.name}_{evaluation.name}"),
            path=evaluation.path, info=info, evaluator=evaluation.ref,
            data=data, column_mapping=evaluation.column_mapping,
            variant=None, connections=evaluation.connections,
            environment_variables=environment(evaluation.origin, evaluation.environment_variables, environ,
                                              connections, lenient=cache is not None),
            provider_connections=connections, options=options, base_run=base_run, cache=cache,
            init=init_arguments(evaluation.origin, evaluation.init, environ, lenient=cache is not None)))
    return jobs
