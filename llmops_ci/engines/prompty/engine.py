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
import logging
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
from llmops_ci.core.progress import Progress
from llmops_ci.core.yamldoc import display_path
from llmops_ci.engines.mapping import base_run, mapped_inputs, mean_scores, read_rows
from llmops_ci.engines.plumbing import LocalEngine, rerouted, upstreams
from llmops_ci.engines.prompty.runner import FAILED, Connection, load_agent, run_line
from llmops_ci.llm.cache import LlmRun, ProxyServer
from llmops_ci.llm.cassette import CacheSettings
from llmops_ci.results.records import LineResult, RunJob, RunRecord, TestJob, TestRecord

if TYPE_CHECKING:
    from llmops_ci.engines.base import BackendContext

log = logging.getLogger("llmops_ci.prompty")
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


class PromptyLocal(LocalEngine):
    """Runs of ``.prompty`` files in the prompty 2.x format, through the ``prompty`` package."""

    def __init__(self, state_dir: Path, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(state_dir, environ)
        self._lock = threading.Lock()
        self._proxy: ProxyServer | None = None
        self._pool: ThreadPoolExecutor | None = None
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
        base = base_run(self.bases, job.base_run) if job.base_run else None
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
        self.ran(job, route, log)
        for line in lines:
            line.tokens = {_TOKENS.get(k, k): v for k, v in line.tokens.items()}
        metrics = mean_scores(lines) if job.base_run else {}
        return RunRecord(job.flow, job.name, "Completed", lines, duration, metrics, None,
                         route.stats.to_json() if job.cache is not None else None, data_lines=len(todo),
                         evaluation=job.evaluation)

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
