"""The local blue/green slots, whichever server runs them (prompt flow's serving app, MLflow's scoring server, the
Agent Framework server): a process of its own on a free port of 127.0.0.1, proven to be the one answering there,
smoke-tested, and recorded in ``endpoints/<name>.json`` under the state dir once it serves."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from llmops_ci.core.child_env import child_environment
from llmops_ci.engines.plumbing import reap
from llmops_ci.releases.base import Release
from llmops_ci.releases.bluegreen import Stage, roll_out
from llmops_ci.releases.file_registry import FileRegistry
from llmops_ci.releases.spec import DeployPlan, DeployResult, ModelSpec, SmokeResult, SmokeTest, other_slot
from llmops_ci.results.records import ProviderConnection, resolve_connection_refs
from llmops_ci.results.state import write_json_atomic

log = logging.getLogger("llmops_ci.local_release")
START_TIMEOUT_S = 90
# the serving processes a later deploy may stop when --keep left them serving (a pid can be reused)
KEPT_SERVERS = (b"llmops_ci.engines.promptflow.serve", b"llmops_ci.engines.agent_framework.serve")


@dataclass(frozen=True)
class Server:
    """How a target's model server answers in a slot."""

    what: str  # for messages: "the serving process"
    health: str  # the path that answers once it is up
    score: str  # the path smoke tests call
    timeout: float = START_TIMEOUT_S


# (port, a name for its log) -> the server's process (leader of a session of its own) and its temporary folder
Start = Callable[[int, str], tuple[subprocess.Popen[str], Path | None]]


class ServedRelease(Release):
    """A release target on this machine: models in the file registry, each slot a server process that ``_serve``
    starts for the registered flow."""

    name = "local"
    server = Server("the serving process", "/health", "/score")

    def __init__(self, state_dir: Path, registry: Path, environ: dict[str, str]) -> None:
        self.state_dir, self.registry, self.environ = state_dir.absolute(), registry.absolute(), environ
        self.models = FileRegistry(self.registry)

    def endpoint_state(self, endpoint: str) -> dict[str, Any]:
        return endpoint_state(self.state_dir, endpoint)

    def dry_run_model(self, spec: ModelSpec) -> str:
        return self.models.dry_run(spec)

    def dry_run_plan(self, plan: DeployPlan) -> str:
        return self.models.dry_run(plan.model) + dry_run_slots(plan)

    def deploy(self, plan: DeployPlan, connections: tuple[ProviderConnection, ...], keep: bool) -> DeployResult:
        model = plan.model
        flow = self.models.flow(model)
        # a serving app leaves ${connection.field} in environment variables as written: resolve here
        env = resolve_connection_refs(plan.environment_variables, connections)
        slots = ServedSlots(self.state_dir, plan, self.server,
                            lambda port, name: self._serve(flow, port, connections, env, name),
                            {"model": model.name, "version": model.version}, keep)
        log.info("%s: deploying %s:%s to slot %s (%s)", plan.endpoint, model.name, model.version, slots.slot,
                 slots.url)
        return roll_out(plan, slots)

    def _serve(self, flow: Path, port: int, connections: tuple[ProviderConnection, ...], env: dict[str, str],
               name: str) -> tuple[subprocess.Popen[str], Path | None]:
        """Start the server of the registered ``flow`` on ``port`` (log ``serve-<name>.log``): as ``Start``."""
        raise NotImplementedError


def dry_run_slots(plan: DeployPlan) -> str:
    steps = " -> ".join(f"{p}%" for p in plan.traffic)
    deployment = {"endpoint": plan.endpoint, "slot": "the idle one (blue on a new endpoint)",
                  "environment_variables": plan.environment_variables,
                  "smoke_tests": [t.name for t in plan.smoke_tests], "traffic": list(plan.traffic)}
    return (f"# would deploy to local endpoint {plan.endpoint}: the idle slot, {len(plan.smoke_tests)} smoke test(s), "
            f"traffic {steps}\n" + json.dumps(deployment, indent=2) + "\n")


def endpoint_file(state_dir: Path, endpoint: str) -> Path:
    return state_dir / "endpoints" / f"{endpoint}.json"


def endpoint_state(state_dir: Path, endpoint: str) -> dict[str, Any]:
    """Which slot serves the endpoint and what each slot holds."""
    path = endpoint_file(state_dir, endpoint)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"serving": None, "slots": {}}


class ServedSlots:
    """``bluegreen.Slots`` for a server process per slot on this machine. ``record``: what the endpoint's state
    says the slot holds (model, version, ...); ``note``: added to a rollback's message."""

    routed = False  # each slot answers at its own address

    def __init__(self, state_dir: Path, plan: DeployPlan, server: Server, start: Start, record: dict[str, Any],
                 keep: bool, note: str = "") -> None:
        self.state_dir, self.plan, self.server, self._start = state_dir, plan, server, start
        self.record, self.keep, self.note = record, keep, note
        self.state = endpoint_state(state_dir, plan.endpoint)
        self.previous: str | None = self.state.get("serving")
        self.slot = other_slot(self.previous)
        self.traffic = {self.previous: 100} if self.previous else {}
        self.port = free_port()
        self.url: str | None = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        self.tmp: Path | None = None
        self.kept: dict[str, Any] = {}

    def start(self) -> str | None:
        # a signal (a CI cancel) from here on unwinds through close, which stops the slot
        self.proc, self.tmp = self._start(self.port, f"{self.plan.endpoint}-{self.slot}")
        return wait_healthy(f"http://127.0.0.1:{self.port}", self.proc, path=self.server.health,
                            server=self.server.what, timeout=self.server.timeout)

    def smoke(self, test: SmokeTest) -> SmokeResult:
        return smoke(f"http://127.0.0.1:{self.port}{self.server.score}", test, self.plan.request_timeout_ms)

    def shift(self, traffic: dict[str, int]) -> str | None:
        return None

    def promote(self) -> str | None:
        assert self.proc is not None
        self.kept = self.state["slots"].get(self.previous or "") or {}
        self.state["slots"][self.slot] = {
            **self.record, "deployed_at": time.time(), "url": self.url, "port": self.port,
            "pid": self.proc.pid if self.keep else None, "tmp": str(self.tmp) if self.keep and self.tmp else None}
        self.state["serving"] = self.slot
        write_json_atomic(endpoint_file(self.state_dir, self.plan.endpoint), self.state)
        return None

    def roll_back(self, failure: str, stage: Stage, traffic: dict[str, int]) -> str:
        where = "traffic stays on " + self.previous if self.previous else "nothing was serving"
        return f"{failure}; {where}, {self.slot} does not serve{self.note}"

    def close(self, deployed: bool) -> None:
        if deployed:  # the slot --keep left serving before no longer serves
            stop_kept(self.kept, self.plan.endpoint, self.previous)
        if self.proc is None:
            return
        if self.keep and deployed:
            log.info("%s: %s keeps serving at %s%s (--keep); stop it with: kill %d", self.plan.endpoint, self.slot,
                     self.url, self.server.score, self.proc.pid)
        else:
            reap(self.proc)
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)


def spawn(module: str, request: dict[str, Any], *, env: dict[str, str], cwd: Path, log_path: Path,
          tmp: Path) -> subprocess.Popen[str]:
    """``python -m module`` in a session of its own, given ``request`` as JSON on stdin; ``tmp`` is removed
    with it if it cannot be handed its request."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=log_file,
                                stderr=subprocess.STDOUT, cwd=cwd, env=child_environment(env), start_new_session=True,
                                text=True)
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(request))
        proc.stdin.close()
    except BaseException:  # an interrupt (or a dead child) before the caller holds it: it must not stay up
        reap(proc)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return proc


def stop_kept(slot: dict[str, Any], endpoint: str, name: str | None) -> None:
    """The slot that served before was kept running (--keep): it no longer serves, so stop it, if it is still
    our serving process (a pid can be reused)."""
    pid = slot.get("pid")
    if not isinstance(pid, int):
        return
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if any(server in command for server in KEPT_SERVERS):
        log.info("%s: stopping %s (process %d), which --keep left serving", endpoint, name, pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    if isinstance(slot.get("tmp"), str) and Path(slot["tmp"]).name.startswith("llmops-serve-"):
        shutil.rmtree(slot["tmp"], ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[str], *, path: str, server: str,
                 timeout: float = START_TIMEOUT_S) -> str | None:
    """None once ``proc`` (started in a session of its own) answers ``path`` on its port itself: another server
    on that port, an old slot still up, must not pass for the new one. Else what is wrong."""
    port = int(url.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"{server} exited ({proc.returncode}) before it was up; see its log"
        try:
            healthy = requests.get(f"{url}{path}", timeout=2).ok
        except requests.RequestException:
            healthy = False
        if healthy:
            owner = listener(port)
            if owner is not None and owner in session_pids(proc.pid):
                return None
            if owner is not None:
                return (f"port {port} is answered by process {owner}, not by the new slot; stop that process and "
                        "deploy again")
        time.sleep(0.3)
    return f"{server} was not up after {timeout:.0f} s"


def smoke(url: str, test: SmokeTest, timeout_ms: int | None) -> SmokeResult:
    """One smoke request to ``url``, judged by the test's expectations."""
    started = time.monotonic()
    try:
        response = requests.post(url, json=test.request, timeout=(timeout_ms or 60_000) / 1000)
    except requests.RequestException as exc:
        return SmokeResult(test.name, False, f"{type(exc).__name__}: {exc}", round(time.monotonic() - started, 3))
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    error = test.check(response.status_code, body)
    return SmokeResult(test.name, error is None, error, round(time.monotonic() - started, 3))


def session_pids(leader: int) -> set[int]:
    """The processes of the session ``leader`` started (the serving process and its workers)."""
    pids = {leader}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == leader:  # field 6 of stat: the session id
                pids.add(int(proc.name))
    return pids


def listener(port: int) -> int | None:
    """The pid of the process listening on 127.0.0.1:``port`` (Linux /proc), None when nobody or unknown."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None
