"""The local backend: prompt flow's own executor (``PFClient``) in a private home under the state dir."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmops_ci import redaction
from llmops_ci.backends.artifacts import count_lines_done, read_run
from llmops_ci.backends.pf_home import PFHome
from llmops_ci.errors import CheckFailed, LlmopsError, ServiceError, UsageError
from llmops_ci.kinds import snapshot
from llmops_ci.llm_cache import CacheSettings, LlmProxy
from llmops_ci.progress import Progress
from llmops_ci.runs import ProviderConnection, RunJob, RunRecord, TestJob, TestRecord, user_paths

log = logging.getLogger("llmops_ci.local")
POLL_S = 0.1
# endpoints that flows building their own clients read; rerouted through the cache proxy too
ENV_ENDPOINTS = ("OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT")


class LocalBackend:
    name = "local"
    routes_local_proxy = True

    def __init__(self, state_dir: Path, environ: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir.absolute()
        self.home = PFHome(self.state_dir / "pf-home")
        self.environ = dict(os.environ if environ is None else environ)

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        self.home.prepare()
        snap = snapshot(job.info, self.home.root / "work" / job.name)
        flow = snap.folder
        request = {
            "action": "run", "flow": str(snap.entry), "data": str(job.data.absolute()), "name": job.name,
            "column_mapping": job.column_mapping, "variant": job.variant, "connections": job.connections,
            "environment_variables": job.environment_variables, "run": job.base_run,
            "worker_count": job.options.workers, "line_timeout_sec": job.options.line_timeout,
        }
        run_folder = self.home.runs / job.name
        started = time.monotonic()
        stats = None
        try:
            with self._llm_calls(job.cache, job.provider_connections) as (connections, env, proxy):
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
            line.error = user_paths(line.error, private, job.flow)
        if artifacts is None:
            raise self._failure(job.label, {**outcome, "error": user_paths(outcome.get("error"), private, job.flow)})
        return RunRecord(job.label, job.name, str(outcome.get("status")), artifacts.lines, duration,
                         artifacts.metrics, user_paths(outcome.get("error"), private, job.flow), stats)

    def test(self, job: TestJob) -> TestRecord:
        self.home.prepare()
        name = f"test_{os.getpid()}_{time.time_ns()}"
        # pf.test takes no connection overrides, so the snapshot carries them
        snap = snapshot(job.info, self.home.root / "work" / name, overrides=job.connections)
        flow = snap.folder
        request = {"action": "test", "flow": str(snap.entry), "inputs": job.inputs, "variant": job.variant,
                   "environment_variables": job.environment_variables,
                   "output_path": str(self.home.root / "work" / f"{name}.out")}
        started = time.monotonic()
        try:
            with self._llm_calls(job.cache, job.provider_connections) as (connections, env, _):
                outcome = self._child(name, request, connections, lambda: None, env)
        finally:
            shutil.rmtree(flow, ignore_errors=True)
            shutil.rmtree(self.home.root / "work" / f"{name}.out", ignore_errors=True)
            redaction.redact_files(self.state_dir / "logs" / f"{name}.log")
        if "output" not in outcome and outcome.get("status") == "Failed":
            raise self._failure("test", outcome)
        return TestRecord(str(outcome.get("status")), outcome.get("output"), outcome.get("error"),
                          list(outcome.get("nodes") or []), time.monotonic() - started)

    @contextlib.contextmanager
    def _llm_calls(self, cache: CacheSettings | None, connections: tuple[ProviderConnection, ...]
                   ) -> Iterator[tuple[tuple[ProviderConnection, ...], dict[str, str], LlmProxy | None]]:
        """Without a cache: the connections as they are. With one: rerouted through the record/replay proxy."""
        if cache is None:
            yield connections, {}, None
            return
        upstreams: dict[str, str | None] = {}
        for conn in connections:
            if conn.type == "open_ai":
                upstreams[conn.name] = conn.values.get("base_url") or (
                    "https://api.openai.com/v1" if conn.values.get("api_key") else None)
            elif conn.type == "azure_open_ai":
                upstreams[conn.name] = conn.values.get("api_base") or None
        routes = {var: f"env-{var.lower()}" for var in ENV_ENDPOINTS if self.environ.get(var)}
        upstreams.update({route: self.environ[var] for var, route in routes.items()})
        with LlmProxy(cache, upstreams) as proxy:
            rerouted = []
            for conn in connections:
                values = dict(conn.values)
                field = {"open_ai": "base_url", "azure_open_ai": "api_base"}.get(conn.type)
                if field:
                    values[field] = proxy.url_for(conn.name)
                    values["api_key"] = values.get("api_key") or "llmops-ci-replay"  # the client insists on one
                rerouted.append(ProviderConnection(conn.name, conn.type, values))
            yield tuple(rerouted), {var: proxy.url_for(route) for var, route in routes.items()}, proxy
        log.info("LLM cache (%s): %d hits, %d misses, %d recorded, %d tokens saved -> %s", cache.mode,
                 proxy.stats.hits, proxy.stats.misses, proxy.stats.recorded, proxy.stats.tokens_saved, cache.cassette)

    # -- the runner process ----------------------------------------------------------------------------
    def _child(self, name: str, request: dict[str, Any], connections: tuple[Any, ...], tick: Any,
               extra_env: dict[str, str] | None = None) -> dict[str, Any]:
        result = self.home.root / "results" / f"{name}.json"
        result.unlink(missing_ok=True)
        request = {**request, "result": str(result), "provider_connections": [asdict(c) for c in connections]}
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        with log_path.open("w", encoding="utf-8") as log_file, tempfile.TemporaryDirectory(prefix="llmops-") as tmp:
            proc = subprocess.Popen([sys.executable, "-m", "llmops_ci.backends.pf_runner"], stdin=subprocess.PIPE,
                                    stdout=log_file, stderr=subprocess.STDOUT, cwd=self.home.root,
                                    env={**self.home.environment(self.environ, Path(tmp)), **(extra_env or {})},
                                    start_new_session=True, text=True)
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(request))
                proc.stdin.close()
                while proc.poll() is None:
                    tick()
                    time.sleep(POLL_S)
                tick()
            finally:
                reap(proc)
        log.debug("prompt flow log: %s", log_path)
        if not result.is_file():
            tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
            raise CheckFailed(f"the prompt flow runner stopped without a result (exit {proc.returncode}); "
                              f"its log is {log_path}:\n{tail}")
        outcome: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
        result.unlink()
        return outcome

    @staticmethod
    def _failure(label: str, outcome: dict[str, Any]) -> LlmopsError:
        message = f"{label}: prompt flow could not start the run: {outcome.get('error')}"
        if outcome.get("user_error"):
            return UsageError(message)
        log.debug("%s", outcome.get("traceback"))
        return ServiceError(message) if "Connection" in str(outcome.get("error")) else CheckFailed(message)


def reap(proc: subprocess.Popen[str]) -> None:
    """Stop the runner and everything it started (its own session), even on Ctrl-C."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    _wait_group_gone(proc.pid)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    """SIGKILL is delivered, not yet acted on: wait until the group's other members (prompt flow's workers,
    multiprocessing's resource tracker) are gone, so nothing of the run outlives the call."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():  # members already dead but not yet reaped by init (zombies) do not count
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False
