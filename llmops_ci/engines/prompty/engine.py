"""The run backend for ``.prompty`` files in the prompty 2.x format: the ``prompty`` package in this process.

Lines of every run share one pool of ``--workers`` threads (the work is waiting on HTTP). Data and column
mapping follow prompt flow's batch runs (``${data.x}``, ``${run.outputs.x}``, ``${run.inputs.x}``, literals; an
input with no mapping reads the data column of its name unless it has a default; lines whose base line failed
are left out). Every LLM call goes through the record/replay proxy on 127.0.0.1, which with the cache off only
passes calls on. Runs are kept where prompt flow's are (``<state>/runs/.base``) so that an evaluation of any
kind can score a prompty run, and a prompty judge any run.
"""

from __future__ import annotations

import atexit
import csv
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_ci.core.child_env import child_environment, ci_credential_refs, scrubbed_os_environ
from llmops_ci.core.errors import UsageError
from llmops_ci.core.log import cache_line
from llmops_ci.core.progress import Progress
from llmops_ci.core.yamldoc import display_path
from llmops_ci.engines.artifacts import read_base
from llmops_ci.engines.promptflow.executor import rerouted, upstreams
from llmops_ci.engines.prompty.runner import COMPLETED, FAILED, Connection, load_agent, run_line
from llmops_ci.llm.cache import CacheSettings, LlmRun, ProxyServer
from llmops_ci.results.records import LineResult, RunJob, RunRecord, TestJob, TestRecord

if TYPE_CHECKING:
    from llmops_ci.engines.base import BackendContext
    from llmops_ci.kinds import FlowInfo

log = logging.getLogger("llmops_ci.prompty")
REFERENCE = re.compile(r"^\$\{([^{}]+)\}$")
ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(:[^}]*)?\}")  # 2.x also has ${env:NAME:default}
KEY_ROUTE = "prompty-key"  # the proxy's name for a file's own ``kind: key`` endpoint (part of the cassette key)
_TOKENS = {"prompt_tokens": "prompt", "completion_tokens": "completion", "total_tokens": "total"}
_LOAD = threading.Lock()  # prompty.load reads ${env:...} from os.environ: one run's variables at a time


def _front_matter(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""  # prompty.load says what is wrong with it
    parts = text.split("---", 2)
    return parts[1] if len(parts) == 3 else ""


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The data's lines as prompt flow reads them: JSON Lines objects, or CSV/TSV rows of strings."""
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{shown}: cannot read the data ({exc})") from None
    if path.suffix in (".csv", ".tsv"):
        delimiter = "\t" if path.suffix == ".tsv" else ","
        return [dict(row) for row in csv.DictReader(text.splitlines(), delimiter=delimiter)]
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{shown}: not valid JSON ({exc})") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise UsageError(f"{shown}: a .json data file must hold a list of objects")
        return rows
    out = []
    for number, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"{shown}:{number}: not a JSON object ({exc})") from None
        if not isinstance(row, dict):
            raise UsageError(f"{shown}:{number}: each line must be a JSON object")
        out.append(row)
    return out


def _outputs_by_line(path: Path) -> dict[int, dict[str, Any]]:
    out = {}
    for row in read_rows(path) if path.is_file() else []:
        number = row.pop("line_number", None)
        if isinstance(number, int):
            out[number] = row
    return out


def mapped_inputs(info: FlowInfo, mapping: Mapping[str, Any], rows: list[dict[str, Any]],
                  base: dict[str, str] | None, label: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, inputs) of each line to run, with ``mapping`` applied as prompt flow applies it."""
    full = {name: f"${{data.{name}}}" for name, spec in info.inputs.items() if not spec.has_default}
    full.update(mapping)
    sources: dict[str, dict[int, dict[str, Any]]] = {"data": dict(enumerate(rows))}
    if base is not None:
        sources["run.outputs"] = _outputs_by_line(Path(base["outputs"]))
        sources["run.inputs"] = dict(enumerate(read_rows(Path(base["data"]))))
    numbers = sorted(set.intersection(*(set(s) for s in sources.values())))
    out, missing = [], set()
    for number in numbers:
        inputs: dict[str, Any] = {}
        for key, value in full.items():
            found = REFERENCE.match(value) if isinstance(value, str) else None
            if found is None:
                inputs[key] = value  # a literal
                continue
            parts = found.group(1).split(".")
            for i in range(1, len(parts)):
                source, field = ".".join(parts[:i]), ".".join(parts[i:])
                if source in sources and field in sources[source][number]:
                    inputs[key] = sources[source][number][field]
                    break
            else:
                missing.add(value)
        out.append((number, inputs))
    if missing:
        raise UsageError(f"{label}: column_mapping refers to {', '.join(sorted(missing))}, which the data "
                         f"{'or the base run ' if base else ''}does not have; map each input to an existing column "
                         "(${data.<column>}) or output (${run.outputs.<output>})")
    return out


def mean_scores(lines: list[LineResult]) -> dict[str, float]:
    """A judge's metrics: the mean of each output that is a number (or a numeric string, or a bool) on every line
    that completed; a prompty file has no aggregation of its own."""
    done = [line.outputs for line in lines if line.status == COMPLETED and isinstance(line.outputs, dict)]
    values: dict[str, list[float]] = {}
    for key in dict.fromkeys(k for outputs in done for k in outputs):
        numbers = [_number(outputs.get(key)) for outputs in done]
        if numbers and all(n is not None for n in numbers):
            values[key] = [n for n in numbers if n is not None]
    return {key: round(sum(v) / len(v), 4) for key, v in values.items()}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


class PromptyLocal:
    """Backend shape (runs): ``.prompty`` files in the prompty 2.x format, through the ``prompty`` package."""

    name = "local"
    routes_local_proxy = True
    parallel_runs = True

    def __init__(self, state_dir: Path, environ: Mapping[str, str] | None = None) -> None:
        self.state_dir = state_dir.absolute()
        self.environ = dict(os.environ if environ is None else environ)
        self.bases = self.state_dir / "runs" / ".base"  # shared with the prompt flow backend
        self._lock = threading.Lock()
        self._proxy: ProxyServer | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._down: dict[str, str] = {}
        atexit.register(self.close)

    def _start(self, workers: int) -> tuple[ProxyServer, ThreadPoolExecutor]:
        with self._lock:
            if self._proxy is None:
                self._proxy = ProxyServer().start()
            if self._pool is None:  # every run's lines share --workers
                self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="prompty-line")
            return self._proxy, self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            if self._proxy is not None:
                self._proxy.stop()
                self._proxy = None

    def endpoint_down(self, run_name: str) -> str | None:
        return self._down.get(run_name)

    def _agent(self, job_path: Path, route: LlmRun, connections: tuple[Any, ...], env: Mapping[str, str],
               timeout_s: float, *, lenient: bool) -> Any:
        """The file loaded with its connection routed through the proxy; ``lenient`` (an LLM cache: calls may be
        replayed) leaves the file's unset ``${env:...}`` empty instead of refusing to run."""
        def key_endpoint(endpoint: str | None) -> str:
            route.upstreams[KEY_ROUTE] = endpoint
            return route.url_for(KEY_ROUTE)

        conns = [Connection(c.name, c.type, c.values) for c in rerouted(connections, route)]
        refused = ci_credential_refs(_front_matter(job_path))
        if refused:
            raise UsageError(f"{display_path(job_path)}: ${{env:{refused[0]}}} is a credential of the CI system; "
                             "llmops-ci never hands it to a flow: give the flow its own key (e.g. OPENAI_API_KEY)")
        overlay = child_environment(self.environ, env)
        unset = list(dict.fromkeys(name for name, default in ENV_REF.findall(_front_matter(job_path))
                                   if name not in overlay and not default))
        if unset and not lenient:
            raise UsageError(f"{display_path(job_path)}: environment variable {unset[0]} is not set; export "
                             f"{unset[0]} (or set it as a CI secret) and run again")
        # replaying needs no endpoint or key: left empty, the proxy answers from the cassette
        overlay.update(dict.fromkeys(unset, ""))
        with _LOAD, scrubbed_os_environ(overlay):
            return load_agent(job_path, conns, timeout_s=timeout_s, key_endpoint=key_endpoint)

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        base = None
        if job.base_run:
            base = read_base(self.bases, job.base_run)
            if base is None:
                raise UsageError(f"the run '{job.base_run}' to evaluate is not in {self.bases}; run batch-run again "
                                 "with the same --state-dir")
        rows = read_rows(job.data)
        todo = mapped_inputs(job.info, job.column_mapping, rows, base, job.label)
        proxy, pool = self._start(job.options.workers)
        settings = job.cache or CacheSettings("off", self.state_dir / "work" / f"{job.name}.cassette.json")
        timeout = float(job.options.line_timeout)
        route = proxy.open_run(job.name, settings, upstreams(job.provider_connections), max(1.0, timeout * 0.9))
        started = time.monotonic()
        try:
            agent = self._agent(job.info.definition, route, job.provider_connections, job.environment_variables,
                                max(1.0, timeout * 0.9), lenient=job.cache is not None)
            lines = run_all(pool, agent, todo, timeout, progress)
        finally:
            route.close()
        duration = time.monotonic() - started
        down = route.down()
        if down:
            self._down[job.name] = down
        if job.cache is not None and (said := cache_line(job.cache.mode, route.stats, job.cache.cassette)):
            log.info("%s", said)
        for line in lines:
            line.tokens = {_TOKENS.get(k, k): v for k, v in line.tokens.items()}
        metrics = mean_scores(lines) if job.base_run else {}
        return RunRecord(job.label, job.name, "Completed", lines, duration, metrics, None,
                         route.stats.to_json() if job.cache is not None else None, data_lines=len(todo))

    def test(self, job: TestJob) -> TestRecord:
        name = f"test_{os.getpid()}_{time.time_ns()}"
        proxy, _ = self._start(1)
        settings = job.cache or CacheSettings("off", self.state_dir / "work" / f"{name}.cassette.json")
        route = proxy.open_run(name, settings, upstreams(job.provider_connections))
        started = time.monotonic()
        try:
            agent = self._agent(job.info.definition, route, job.provider_connections, job.environment_variables, 300,
                                lenient=job.cache is not None)
            line = run_line(agent, 0, job.inputs)
        finally:
            route.close()
        return TestRecord(line.status, line.outputs, line.error, [], time.monotonic() - started)


def run_all(pool: ThreadPoolExecutor, agent: Any, todo: list[tuple[int, dict[str, Any]]], timeout: float,
            progress: Progress) -> list[LineResult]:
    """Every line through ``agent`` on the shared pool; a line past ``timeout`` (from when it started) is failed
    and abandoned (its client's own timeout ends its call)."""
    begun: dict[int, float] = {}

    def one(number: int, inputs: dict[str, Any]) -> LineResult:
        begun[number] = time.monotonic()
        return run_line(agent, number, inputs)

    futures: dict[Future[LineResult], tuple[int, dict[str, Any]]] = {
        pool.submit(one, number, inputs): (number, inputs) for number, inputs in todo}
    results: dict[int, LineResult] = {}
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                line = future.result()
                results[line.line] = line
            now = time.monotonic()
            for future in list(pending):
                number, inputs = futures[future]
                if number in begun and now - begun[number] > timeout:
                    pending.discard(future)
                    results[number] = LineResult(
                        number, FAILED, dict(inputs), None, now - begun[number], {},
                        error=f"Line {number} execution timeout for exceeding {int(timeout)} seconds (abandoned: it "
                              "may still be running)", error_code="LineExecutionTimeoutError")
            progress.update(len(results))
    except BaseException:  # Ctrl-C: lines not started are dropped, not run
        for future in pending:
            future.cancel()
        raise
    progress.finish(len(results))
    return [results[number] for number, _ in todo]


def from_context(ctx: BackendContext) -> PromptyLocal:
    """The factory for engine ``prompty`` of the local backend."""
    return PromptyLocal(ctx.state_dir, ctx.environ)
