"""The process and proxy plumbing every engine shares: a runner child process started in a session of its own,
watched, and stopped with everything it started (no process left behind, even on Ctrl-C); and the record/replay
proxy routes that stand in for a run's connections and endpoint variables."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmops_ci.core.child_env import child_environment
from llmops_ci.core.errors import CheckFailed
from llmops_ci.core.log import cache_line
from llmops_ci.engines.base import Backend
from llmops_ci.llm.cache import LlmRun
from llmops_ci.results.records import ProviderConnection, RunJob, resolve_connection_refs

POLL_S = 0.1
# endpoints that flows building their own clients read; rerouted through the cache proxy too
ENV_ENDPOINTS = ("OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT")
# endpoints an agent's or a judge's clients read from the environment, and the proxy route standing in for each
ENDPOINT_ROUTES = {"OPENAI_BASE_URL": "env-openai_base_url", "DATABRICKS_HOST": "databricks"}
REPLAY_KEYS = {"OPENAI_API_KEY": "llmops-ci-replay", "DATABRICKS_TOKEN": "llmops-ci-replay"}


class LocalEngine(Backend):
    """What the engines running flows on this machine share: the state dir and environment, the runs kept for an
    evaluation to score (``<state>/runs/.base``), and what the proxy saw of each run's endpoints."""

    name = "local"
    parallel_runs = True

    def __init__(self, state_dir: Path, environ: Mapping[str, str] | None = None) -> None:
        self.state_dir = state_dir.absolute()
        self.environ = dict(os.environ if environ is None else environ)
        self.bases = self.state_dir / "runs" / ".base"
        self._down: dict[str, str] = {}

    def endpoint_down(self, run_name: str) -> str | None:
        return self._down.get(run_name)

    def ran(self, job: RunJob, route: LlmRun, log: logging.Logger) -> None:
        """Keep what the proxy saw of the run's endpoints, and say what the LLM cache did."""
        down = route.down()
        if down:
            self._down[job.name] = down
        if job.cache is not None and (said := cache_line(job.cache.mode, route.stats, job.cache.cassette)):
            log.info("%s", said)


# -- runner processes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exited:
    """How a runner process ended: its exit code, whether the watcher stopped it, and its log."""

    returncode: int | None
    stopped: bool
    log_path: Path

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def no_result(self, runner: str, prefix: str = "") -> CheckFailed:
        return CheckFailed(f"{prefix}the {runner} runner stopped without a result (exit {self.returncode}); its log "
                           f"is {self.log_path}:\n{self.tail()}")


def run_child(module: str, request: dict[str, Any], *, cwd: Path, env: Mapping[str, str], log_path: Path,
              watch: Callable[[], bool | None] | None = None, poll_s: float = POLL_S) -> Exited:
    """``python -m module`` with ``request`` as JSON on its stdin and its output in ``log_path``, in a session of
    its own; ``watch`` is called while it runs (returning False stops it). However this ends, the child and
    everything it started are gone when it returns."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log_file:
        # the one way a runner starts: whatever the engine built, no CI credential reaches the code it runs
        proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=log_file,
                                stderr=subprocess.STDOUT, cwd=cwd, env=child_environment(env), start_new_session=True,
                                text=True)
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(request, default=str))
            proc.stdin.close()
            while proc.poll() is None:
                if watch is not None and watch() is False:
                    break
                time.sleep(poll_s)
        finally:
            stopped = proc.poll() is None
            reap(proc)
    return Exited(proc.returncode, stopped, log_path)


def take_result(path: Path) -> dict[str, Any] | None:
    """The JSON a runner left at ``path`` (removed once read); None when it left none."""
    if not path.is_file():
        return None
    outcome: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    path.unlink()
    return outcome


def count_lines(path: Path) -> int:
    """Lines written so far to a runner's progress file (a runner writes one per finished data line)."""
    try:
        with path.open("rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def reap(proc: subprocess.Popen[str]) -> None:
    """Stop the runner and everything it started (its own session), even on Ctrl-C, and wait until they are gone:
    a killed child of the runner (multiprocessing's resource tracker, pf's workers) takes a moment to die."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def end_group(pgid: int, grace_s: float = 5.0) -> None:
    """Stop a session that is not our child (an executor an earlier step kept): SIGTERM, then SIGKILL to what is
    left after ``grace_s``, and wait until none of it runs."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _signal_group(pgid, sig)
        deadline = time.monotonic() + grace_s
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not _group_alive(pgid):
            return


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies excepted: they are dead, waiting for init)."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return False
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# -- proxy routes -------------------------------------------------------------------------------------------


def upstreams(connections: tuple[ProviderConnection, ...]) -> dict[str, str | None]:
    """Where each connection's calls really go (None: nowhere, replay only)."""
    out: dict[str, str | None] = {}
    for conn in connections:
        if conn.type == "open_ai":
            out[conn.name] = conn.values.get("base_url") or (
                "https://api.openai.com/v1" if conn.values.get("api_key") else None)
        elif conn.type == "azure_open_ai":
            out[conn.name] = conn.values.get("api_base") or None
    return out


def env_upstreams(env: dict[str, str]) -> dict[str, str]:
    """A run's own endpoint variables (``OPENAI_BASE_URL: https://...`` in its environment_variables): each gets a
    route of the run's, so that its calls are recorded and replayed like a connection's."""
    return {f"env-{var.lower()}": env[var] for var in ENV_ENDPOINTS
            if isinstance(env.get(var), str) and env[var].startswith(("http://", "https://"))}


def routed(by_name: bool, env: dict[str, str], connections: tuple[ProviderConnection, ...], route: LlmRun
           ) -> dict[str, Any]:
    """What the executor gets of a run's connections and environment, every endpoint pointing at the proxy:
    connection fields the environment names (``AZURE_OPENAI_ENDPOINT: ${open_ai_connection.api_base}``, or the
    value already resolved from it), the run's own endpoint variables, and (replay) the proxy as the only place a
    call may go. Connections a flow looks up by name in the shared store (``by_name``:
    ``FlowInfo.connections_by_name``, as flex flows and prompty files do) get the route every run shares, which the
    proxy resolves from each call's line header."""
    by_run = rerouted(connections, route)
    stored = rerouted(connections, route, shared=by_name)
    real = {url.rstrip("/"): conn.name for conn in connections
            for url in [upstreams((conn,)).get(conn.name)] if url}
    out = resolve_connection_refs(env, by_run)
    for var, value in env.items():
        if isinstance(value, str) and value.rstrip("/") in real:
            out[var] = route.url_for(real[value.rstrip("/")])
    for name, value in env_upstreams(env).items():
        var = next(v for v in ENV_ENDPOINTS if f"env-{v.lower()}" == name)
        if value.rstrip("/") not in real:
            out[var] = route.url_for(name)
    return {"environment_variables": out, "provider_connections": [asdict(c) for c in stored],
            "only_origin": route.server.url if route.settings.mode == "replay" else None}


def rerouted(connections: tuple[ProviderConnection, ...], route: LlmRun, *, shared: bool = False
             ) -> tuple[ProviderConnection, ...]:
    out = []
    for conn in connections:
        values = dict(conn.values)
        field = {"open_ai": "base_url", "azure_open_ai": "api_base"}.get(conn.type)
        if field:
            values[field] = route.shared_url(conn.name) if shared else route.url_for(conn.name)
            values["api_key"] = values.get("api_key") or "llmops-ci-replay"  # the client insists on one
        out.append(ProviderConnection(conn.name, conn.type, values))
    return tuple(out)
