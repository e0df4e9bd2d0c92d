"""The local backend: prompt flow's own executor in one warm process per step, in a private home under the state dir.

Every run of the backend's life (a step, or all of ``pr``) goes to one ``pf_worker`` process, and every LLM
call through one proxy on 127.0.0.1 (``llm_cache``: record/replay, or pass-through that only counts tokens).
A flow that cannot run in-process falls back to ``pf.run`` in a process of its own (``pf_runner``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmops_ci.core import redaction
from llmops_ci.core.errors import CheckFailed, LlmopsError, ServiceError, UsageError
from llmops_ci.core.log import cache_line
from llmops_ci.core.progress import Progress
from llmops_ci.core.service_errors import service_failure
from llmops_ci.engines.artifacts import count_lines_done, read_base, read_run
from llmops_ci.engines.plumbing import (
    ENV_ENDPOINTS,
    LocalEngine,
    env_upstreams,
    rerouted,
    routed,
    run_child,
    take_result,
    upstreams,
)
from llmops_ci.engines.promptflow import early, linger
from llmops_ci.engines.promptflow.handle import Worker
from llmops_ci.engines.promptflow.home import PFHome
from llmops_ci.engines.promptflow.launch import STATE_VAR, executor_base
from llmops_ci.kinds import snapshot
from llmops_ci.kinds.base import FlowInfo
from llmops_ci.llm.cache import LlmProxy, LlmRun, ProxyServer
from llmops_ci.llm.cassette import CacheSettings
from llmops_ci.results.records import (
    LineResult,
    ProviderConnection,
    RunJob,
    RunRecord,
    TestJob,
    TestRecord,
    line_status,
    run_status,
    user_paths,
)
from llmops_ci.results.store import base_dir

log = logging.getLogger("llmops_ci.local")


IN_PROCESS_KINDS = ("dag", "flex", "prompty")
# a flow (flow file or llmops.yaml environment_variables) opts out of the warm executor with this set to "process"
EXECUTOR_VAR = "LLMOPS_CI_EXECUTOR"


class LocalBackend(LocalEngine):
    """Prompt flow's executor: DAG and flex flows and prompt flow's prompty files, warm in one process."""

    def __init__(self, state_dir: Path, environ: dict[str, str] | None = None, keep_s: float = 0.0) -> None:
        """``keep_s`` > 0: the executor is left, when the backend closes, to the next step of the CI job
        (``linger``), which uses it if it is exactly the process it would start."""
        super().__init__(state_dir, environ)
        self._keep_s = keep_s
        self._home: PFHome | None = None
        atexit.register(self.close)  # a backend used outside a step's scope still takes its processes with it
        self._lock = threading.RLock()
        self._proxy: ProxyServer | None = None
        self._worker: Worker | None = None
        self._workers = 0
        self._env_routes: dict[str, str] = {}
        self._closed = False

    @property
    def home(self) -> PFHome:
        """The private prompt flow home: a temporary folder outside the state dir (which CI may publish), removed
        with the backend, so the store and the keyring that decrypts it never outlive the step."""
        with self._lock:
            if self._home is None:
                self._home = PFHome(Path(tempfile.mkdtemp(prefix="llmops-pf-"))).prepare()
            return self._home

    # -- the warm executor and the proxy live as long as the backend (one step, or all of ``pr``) ---------
    def _start(self, workers: int) -> tuple[ProxyServer, Worker]:
        with self._lock:
            if self._closed:  # a job thread still going after its step ended must not start a process nobody stops
                raise RuntimeError("the local backend was closed (its step ended); no executor is started")
            if self._proxy is None:
                routes = {var: f"env-{var.lower()}" for var in ENV_ENDPOINTS if self.environ.get(var)}
                self._proxy = ProxyServer(env_upstreams={route: self.environ[var] for var, route in routes.items()})
                self._proxy.start()
                self._env_routes = {var: self._proxy.env_url(route) for var, route in routes.items()}
            if self._worker is None or not self._worker.alive():
                if self._worker is not None:
                    self._worker.close()
                self._workers = workers
                base, log_path = executor_base(self.environ, self.state_dir), self.state_dir / "logs" / "executor.log"
                # an executor an earlier step of the job kept is warm already; else the one ``python -m llmops_ci``
                # started ahead, if either is this very process (a different one is stopped)
                kept = self._kept(base, workers, log_path)
                launched = early.take(base, workers, log_path) if self._home is None and kept is None else None
                if launched is not None:
                    self._home = launched.home
                    log.debug("the prompt flow executor started ahead (pid %s) is taken over", launched.proc.pid)
                elif kept is not None:
                    self._home = PFHome(kept[0].home)
                    log.debug("the prompt flow executor kept by an earlier step (pid %s) is used", kept[0].pid)
                self._worker = Worker(self.home, base, workers, log_path, launched, kept)
            return self._proxy, self._worker

    def _kept(self, base: dict[str, str], workers: int, log_path: Path
              ) -> tuple[linger.Kept, socket.socket] | None:
        """The executor an earlier step of the job kept, connected, if it is the one this step would start; any
        other kept one is stopped (also one this backend cannot take because it has a home already: left running,
        it would be orphaned when this step's executor takes the state dir's pointer)."""
        kept = linger.find(self.state_dir)
        if kept is None:
            return None
        if self._home is None and kept.matches(linger.fingerprint(base, workers, log_path)):
            sock = kept.connect()
            if sock is not None:
                return kept, sock
        linger.stop(kept, self.state_dir)
        return None

    def prestart(self, infos: list[FlowInfo], workers: int) -> None:
        """Start the warm executor now (prompt flow's import, the larger part of a step's fixed cost), in its own
        process, so that it loads while the caller does other work (``pr``: lint), when one of ``infos`` will run
        in it. Starting it changes nothing about what runs there: ``run`` would start the same process."""
        if any(info.kind in IN_PROCESS_KINDS and str(info.environment_variables.get(EXECUTOR_VAR, "")).lower()
               != "process" for info in infos):
            self._start(workers)
        else:
            early.discard()

    def close(self) -> None:
        """Stop the executor process (its children with it) and the proxy; idempotent, and final."""
        with self._lock:
            self._closed = True
            kept = False
            if self._worker is not None:
                kept = self._worker.close(self._keep_s, self.state_dir)
                self._worker = None
            if self._proxy is not None:
                self._proxy.stop()
                self._proxy = None
            if self._home is not None:
                if not kept:  # a kept executor's home goes with it
                    shutil.rmtree(self._home.root, ignore_errors=True)
                self._home = None
        # what flow code printed may hold a secret; the logs go out with the state dir
        redaction.redact_files(self.state_dir / "logs")

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fallback_reason(self, job: RunJob) -> str | None:
        """Why ``job`` cannot run in the warm executor (None: it can)."""
        env = {**job.info.environment_variables, **job.environment_variables}
        if str(env.get(EXECUTOR_VAR, "")).lower() == "process":
            return f"{EXECUTOR_VAR}=process is set for it"
        if job.info.kind not in IN_PROCESS_KINDS:
            return f"its kind '{job.info.kind}' has no in-process executor"
        return None

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        reason = self.fallback_reason(job)
        if reason:
            log.info("%s: runs in its own prompt flow process (pf.run) because %s", job.label, reason)
            return self._run_pf(job, progress)
        proxy, worker = self._start(job.options.workers)
        snap = snapshot(job.info, self.home.root / "work" / job.name, variant=job.variant, overrides=job.connections)
        base = self._base(job.base_run) if job.base_run else None
        settings = job.cache or CacheSettings("off", self.home.root / "work" / f"{job.name}.cassette.json")
        # a call may use most of its line's time, so that a slow endpoint is seen as such before the line gives up
        env = {**job.info.environment_variables, **job.environment_variables}
        route = proxy.open_run(job.name, settings, {**upstreams(job.provider_connections), **env_upstreams(env)},
                               max(1.0, job.options.line_timeout * 0.9))
        request = {
            "op": "run", "tag": job.name, "name": job.name, "kind": job.info.kind, "flow": str(snap.entry),
            "working_dir": str(snap.folder), "data": str(job.data.absolute()), "base": base,
            "column_mapping": job.column_mapping, "line_timeout_sec": job.options.line_timeout, "init": job.init,
            "processes": replay_processes() if settings.mode == "replay" else None,
            **self._routed(job.info.connections_by_name, env, job.provider_connections, route),
        }
        started = time.monotonic()
        try:
            outcome = worker.call(request, progress.update)
        finally:
            route.close()
            shutil.rmtree(snap.folder, ignore_errors=True)
        duration = time.monotonic() - started
        self.ran(job, route, log)
        if "lines" not in outcome:  # the flow could not start (a tool that does not load): it failed as a whole
            progress.finish(0)
            log.debug("%s", outcome.get("traceback"))
            error = user_paths(str(outcome.get("error") or "the run could not start"), [snap.folder], job.path)
            return RunRecord(job.flow, job.name, "Failed", [], duration, {}, error,
                             route.stats.to_json() if job.cache is not None else None, evaluation=job.evaluation)
        lines = [_line(raw, route.tokens(int(raw["line"])), route.failure(int(raw["line"])))
                 for raw in outcome["lines"]]
        progress.finish(len(lines))
        return RunRecord(job.flow, job.name, run_status(outcome.get("status"), "prompt flow"), lines, duration,
                         dict(outcome.get("metrics") or {}), outcome.get("error"),
                         route.stats.to_json() if job.cache is not None else None, evaluation=job.evaluation)

    def _routed(self, by_name: bool, env: dict[str, str], connections: tuple[ProviderConnection, ...],
                route: LlmRun) -> dict[str, Any]:
        """``routed``, with the endpoint variables of this process's own environment pointing at the proxy too: they
        go with each job, not into the executor's environment, so that an executor started ahead (before the proxy)
        is the same process as one started now."""
        found = routed(by_name, env, connections, route)
        found["environment_variables"] = {**self._env_routes, **found["environment_variables"]}
        return found

    def _base(self, name: str) -> dict[str, str]:
        """The run to score, as execute.py keeps every batch run (any kind, any engine)."""
        found = read_base(base_dir(self.state_dir, name).parent, name)
        if found is None:
            raise UsageError(f"the run '{name}' to evaluate is not in {base_dir(self.state_dir, name).parent}; run "
                             "batch-run again with the same --state-dir")
        return found

    def _run_pf(self, job: RunJob, progress: Progress) -> RunRecord:
        """Today's path: ``pf.run`` in a process of its own (its own process pool and tracing for tokens)."""
        snap = snapshot(job.info, self.home.root / "work" / job.name)
        flow = snap.folder
        request = {
            "action": "run", "flow": str(snap.entry), "data": str(job.data.absolute()), "name": job.name,
            "column_mapping": job.column_mapping, "variant": job.variant, "connections": job.connections,
            "environment_variables": job.environment_variables, "run": job.base_run,
            "worker_count": job.options.workers, "line_timeout_sec": job.options.line_timeout,
        }
        if job.base_run:  # pf.run sees only its own store's runs: the base run's outputs and data, merged
            request.update(run=None, base=self._base(job.base_run))
        run_folder = self.home.runs / job.name
        started = time.monotonic()
        stats = None
        try:
            with self._llm_calls(job.cache, job.provider_connections, env_upstreams(job.environment_variables)
                                 ) as (connections, env, proxy):
                if proxy is not None and proxy.run is not None:  # the run's endpoints recorded/replayed too
                    request["environment_variables"] = routed(
                        job.info.connections_by_name, dict(job.environment_variables), job.provider_connections,
                        proxy.run)["environment_variables"]
                outcome = self._child(job.name, request, connections,
                                      lambda: progress.update(count_lines_done(run_folder)), env)
            stats = proxy.stats.to_json() if proxy else None
        finally:
            shutil.rmtree(flow, ignore_errors=True)  # the run keeps its own snapshot
        duration = time.monotonic() - started
        # prompt flow's own records of the run stay for an evaluation to read; no secret may stay in them
        redaction.redact_files(run_folder)
        redaction.redact_files(self.state_dir / "logs" / f"{job.name}.log")
        artifacts = read_run(run_folder) if run_folder.is_dir() else None
        progress.finish(len(artifacts.lines) if artifacts else 0)
        private = [flow, run_folder / "snapshot"]  # messages name the user's flow folder, not these copies
        for line in artifacts.lines if artifacts else []:
            line.error = user_paths(line.error, private, job.path)
        if artifacts is None:
            raise self._failure(job.label, {**outcome, "error": user_paths(outcome.get("error"), private, job.path)})
        return RunRecord(job.flow, job.name, run_status(outcome.get("status"), "prompt flow"), artifacts.lines,
                         duration, artifacts.metrics, user_paths(outcome.get("error"), private, job.path), stats,
                         evaluation=job.evaluation)

    def test(self, job: TestJob) -> TestRecord:
        name = f"test_{os.getpid()}_{time.time_ns()}"
        proxy, worker = self._start(1)
        # the snapshot carries variant and connection overrides
        snap = snapshot(job.info, self.home.root / "work" / name, variant=job.variant, overrides=job.connections)
        settings = job.cache or CacheSettings("off", self.home.root / "work" / f"{name}.cassette.json")
        env = {**job.info.environment_variables, **job.environment_variables}
        route = proxy.open_run(name, settings, {**upstreams(job.provider_connections), **env_upstreams(env)})
        request = {"op": "test", "tag": name, "name": name, "kind": job.info.kind, "flow": str(snap.entry),
                   "working_dir": str(snap.folder), "inputs": job.inputs,
                   **self._routed(job.info.connections_by_name, env, job.provider_connections, route)}
        started = time.monotonic()
        try:
            outcome = worker.call(request, lambda done: None)
            tokens = route.tokens(0)
        finally:
            route.close()
            shutil.rmtree(snap.folder, ignore_errors=True)
        if "output" not in outcome and outcome.get("status") == "Failed":
            raise self._failure("test", outcome)
        return TestRecord(line_status(outcome.get("status"), "prompt flow"), outcome.get("output"),
                          outcome.get("error"), list(outcome.get("nodes") or []), time.monotonic() - started, tokens)

    @contextlib.contextmanager
    def _llm_calls(self, cache: CacheSettings | None, connections: tuple[ProviderConnection, ...],
                   extra: dict[str, str] | None = None
                   ) -> Iterator[tuple[tuple[ProviderConnection, ...], dict[str, str], LlmProxy | None]]:
        """Without a cache: the connections as they are. With one: rerouted through the record/replay proxy."""
        if cache is None:
            yield connections, {}, None
            return
        routes = {var: f"env-{var.lower()}" for var in ENV_ENDPOINTS if self.environ.get(var)}
        with LlmProxy(cache, {**upstreams(connections), **(extra or {}),
                              **{r: self.environ[v] for v, r in routes.items()}}) as proxy:
            assert proxy.run is not None
            yield (rerouted(connections, proxy.run), {var: proxy.url_for(route) for var, route in routes.items()},
                   proxy)
        if said := cache_line(cache.mode, proxy.stats, cache.cassette):
            log.info("%s", said)

    # -- the runner process ----------------------------------------------------------------------------
    def _child(self, name: str, request: dict[str, Any], connections: tuple[Any, ...], tick: Callable[[], None],
               extra_env: dict[str, str] | None = None) -> dict[str, Any]:
        result = self.home.root / "results" / f"{name}.json"
        result.unlink(missing_ok=True)
        request = {**request, "result": str(result), "provider_connections": [asdict(c) for c in connections]}
        with tempfile.TemporaryDirectory(prefix="llmops-") as tmp:
            exited = run_child("llmops_ci.engines.promptflow.runner", request, cwd=self.home.root,
                               env={**self.home.environment(self.environ, Path(tmp)), **(extra_env or {}),
                                    STATE_VAR: str(self.state_dir)},
                               log_path=self.state_dir / "logs" / f"{name}.log", watch=tick)
        tick()
        log.debug("prompt flow log: %s", exited.log_path)
        outcome = take_result(result)
        if outcome is None:
            raise exited.no_result("prompt flow")
        return outcome

    @staticmethod
    def _failure(label: str, outcome: dict[str, Any]) -> LlmopsError:
        message = f"{label}: prompt flow could not start the run: {outcome.get('error')}"
        if outcome.get("user_error"):
            return UsageError(message)
        log.debug("%s", outcome.get("traceback"))
        return ServiceError(message) if "Connection" in str(outcome.get("error")) else CheckFailed(message)


def replay_processes() -> int:
    """Line processes for a replayed run. Replayed calls answer at once and a call that is not for the proxy fails the
    line, so no line waits on the network: more processes than CPUs only contend for them (a 200-line replay on 2
    CPUs took 0.4 s longer with 8 than with 2). Each line still runs alone in its process; --workers stays the limit."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _line(raw: dict[str, Any], tokens: dict[str, int] | None, seen_by_proxy: str | None = None) -> LineResult:
    return LineResult(line=int(raw["line"]), status=line_status(raw["status"], "prompt flow"),
                      inputs=dict(raw.get("inputs") or {}), outputs=raw.get("outputs"),
                      duration_s=raw.get("duration_s"),
                      tokens=tokens or dict(raw.get("tokens") or {}), error=raw.get("error"),
                      error_code=raw.get("error_code"), node=raw.get("node"),
                      # the proxy saw the endpoint's own failure; the client behind it only a reset or a 5xx
                      service_failure=None if raw.get("status") == "Completed" else seen_by_proxy or (
                          service_failure(raw["error_detail"]) if isinstance(raw.get("error_detail"), dict) else None))
