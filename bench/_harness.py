"""Helpers the benchmarks share: run a command timed in its own session, read its output, reap leftovers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_pids(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)


def run_timed(cmd: list[str], env: dict[str, str], cwd: Path, out: Path) -> tuple[float, float, int]:
    """Run ``cmd`` (own session, stdout+stderr to ``out``); returns (seconds, wall-clock start, exit code)."""
    with out.open("w", encoding="utf-8") as fh:
        wall = time.time()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        seconds = time.perf_counter() - start
    return seconds, wall, code


def tail(path: Path, n: int = 20) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no output)"
    return "\n".join("    " + x for x in lines[-n:])


def processes_mentioning(needle: str, *, env_entry: bool = False) -> list[tuple[int, str]]:
    """Live (non-zombie) processes on Linux that mention ``needle``: as one exact ``NAME=value`` entry of their
    environment (``env_entry``), or anywhere in their environment or command line."""
    found: list[tuple[int, str]] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    want = needle.encode()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
            hit = want in env.split(b"\0") if env_entry else want in env + cmdline
            if not hit or (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except OSError:
            continue
        found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
    return found


def find_pf(python: str) -> str | None:
    """The ``pf`` CLI next to ``python`` (its virtualenv), else on PATH."""
    folder = Path(python).parent
    for name in ("pf", "pf.exe", "pf.cmd", "pf.bat"):
        if (folder / name).is_file():
            return str(folder / name)
    return shutil.which("pf")
