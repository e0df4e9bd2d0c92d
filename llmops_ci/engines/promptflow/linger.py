"""One warm executor for the steps of a CI job: ``batch-run`` leaves it running, ``eval-run`` (a new process, the
next CI step) uses it instead of importing prompt flow again, and the job's last step stops it.

The state dir holds only a pointer, ``<state>/.executor.json`` = ``{"pid": N}``; the state dir may be published or
come from elsewhere, so nothing else is taken from it. The process it names is used only if it runs as this user,
is our executor (its command line) and belongs to this state dir (its environment); its socket and folders are read
from that environment. Whether it is the process this step would start is decided by a fingerprint of what it was
started with (environment, ``--workers``, log), kept in its private temporary folder (mode 0700), never in the state
dir. Anything else is stopped and a new executor started: a kept executor saves time, never changes a result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llmops_ci.core.errors import UsageError
from llmops_ci.engines.promptflow.launch import MODULE, STATE_VAR

POINTER = ".executor.json"
FINGERPRINT = "fingerprint"
SOCKET = "executor.sock"  # jobs.SOCKET: the executor's module is not imported here (it imports prompt flow's parts)
KEEP_VAR = "LLMOPS_CI_KEEP_EXECUTOR"  # seconds a kept executor waits for the next step; 0: not kept
CI_KEEP_S = 300.0  # on a CI runner, which ends what a job left running when the job ends


def keep_seconds(environ: Mapping[str, str], on_ci: bool) -> float:
    """How long an executor waits, after a step that runs flows, for the next step of the job: the variable's
    value, else 300 s on a CI runner and 0 (not kept) elsewhere."""
    given = environ.get(KEEP_VAR, "").strip()
    if not given:
        return CI_KEEP_S if on_ci else 0.0
    try:
        seconds = float(given)
    except ValueError:
        seconds = float("nan")
    if not 0 <= seconds < float("inf"):
        raise UsageError(f"{KEEP_VAR}={given!r} is not a number of seconds: set it to how long prompt flow's executor "
                         "may wait for the next step of the CI job (e.g. 300), or to 0 to end it with each step")
    return seconds


def fingerprint(base: dict[str, str], workers: int, log_path: Path) -> str:
    return hashlib.sha256(json.dumps([sorted(base.items()), workers, str(log_path)]).encode()).hexdigest()


@dataclass(frozen=True)
class Kept:
    """A kept executor of this state dir, as its own process says it is."""

    pid: int
    home: Path
    tmp: Path

    @property
    def socket_path(self) -> Path:
        return self.tmp / SOCKET

    def matches(self, wanted: str) -> bool:
        try:
            return (self.tmp / FINGERPRINT).read_text(encoding="utf-8") == wanted
        except OSError:
            return False

    def connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.settimeout(None)
        except OSError:
            sock.close()
            return None
        return sock


def remember(state_dir: Path, pid: int, tmp: Path, wanted: str) -> None:
    """Leave the pointer for the next step (and the fingerprint beside the executor's socket)."""
    (tmp / FINGERPRINT).write_text(wanted, encoding="utf-8")
    pointer = state_dir / POINTER
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(json.dumps({"pid": pid}), encoding="utf-8")


def find(state_dir: Path) -> Kept | None:
    """The kept executor the pointer names, if that process is ours and this state dir's; the pointer goes if not."""
    pointer = state_dir / POINTER
    try:
        pid = json.loads(pointer.read_text(encoding="utf-8"))["pid"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        pid = None
    kept = _process(pid, state_dir.absolute()) if isinstance(pid, int) and pid > 1 else None
    if kept is None:
        with contextlib.suppress(OSError):
            pointer.unlink()
    return kept


def _process(pid: int, state_dir: Path) -> Kept | None:
    proc = Path("/proc") / str(pid)
    try:
        if proc.stat().st_uid != os.getuid():
            return None
        argv = proc.joinpath("cmdline").read_bytes().split(b"\0")
        env = dict(item.split(b"=", 1) for item in proc.joinpath("environ").read_bytes().split(b"\0") if b"=" in item)
        state = proc.joinpath("stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, ValueError):
        return None
    if state == "Z" or MODULE.encode() not in argv or env.get(STATE_VAR.encode()) != str(state_dir).encode():
        return None
    home, tmp = env.get(b"PF_HOME_DIRECTORY"), env.get(b"TMPDIR")
    if not home or not tmp:
        return None
    return Kept(pid, Path(os.fsdecode(home)), Path(os.fsdecode(tmp)))


def stop(kept: Kept, state_dir: Path | None = None) -> None:
    """End a kept executor (and everything it started), remove its folders and the pointer."""
    from llmops_ci.engines.plumbing import end_group  # not at import: ``early`` imports this module first thing

    end_group(kept.pid)
    shutil.rmtree(kept.tmp, ignore_errors=True)
    shutil.rmtree(kept.home, ignore_errors=True)
    if state_dir is not None:
        with contextlib.suppress(OSError):
            (state_dir / POINTER).unlink()


def stop_kept(state_dir: Path) -> None:
    """The job's last step: the executor its earlier steps kept, if any, ends now."""
    kept = find(state_dir)
    if kept is not None:
        stop(kept, state_dir)


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
