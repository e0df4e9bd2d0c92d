"""The local blue/green slot, whichever server runs it (prompt flow's serving app, MLflow's scoring server):
a free port on 127.0.0.1, waiting until the slot's own process answers there, and a smoke request."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from llmops_ci.releases.spec import SmokeResult, SmokeTest

START_TIMEOUT_S = 90


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
