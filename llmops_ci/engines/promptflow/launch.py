"""Starting the warm executor process (``worker``): its environment in the private home, its log, and the pipe its
events come back on. Light to import on purpose: ``python -m llmops_ci`` starts it (``early``) before it has even
imported the rest of the command line."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from llmops_ci.engines.promptflow.home import PFHome

# the state dir in an executor's environment says whose process it is (and lets tests find leftovers)
STATE_VAR = "LLMOPS_CI_STATE_DIR"
MODULE = "llmops_ci.engines.promptflow.jobs"


def executor_base(environ: dict[str, str], state_dir: Path) -> dict[str, str]:
    """What the executor of ``state_dir`` is started with, before the private home's own variables."""
    return {**environ, STATE_VAR: str(state_dir.absolute())}


@dataclass
class Launched:
    """A started executor process: what it was started with (so that a caller can tell whether it is the one it
    would start), its events pipe, its log and the private folders it uses."""

    proc: subprocess.Popen[str]
    events: TextIO
    log: TextIO
    tmp: str
    home: PFHome
    base: dict[str, str]
    workers: int
    log_path: Path

    def same(self, base: dict[str, str], workers: int, log_path: Path) -> bool:
        return (self.proc.poll() is None and self.base == base and self.workers == workers
                and self.log_path == log_path)

    def stop(self) -> None:
        """Stop it and everything it started, and remove its private folders: for one nobody took."""
        from llmops_ci.engines.plumbing import reap

        reap(self.proc)
        for stream in (self.events, self.log):
            with contextlib.suppress(OSError):
                stream.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(self.home.root, ignore_errors=True)


def launch(home: PFHome, base: dict[str, str], workers: int, log_path: Path) -> Launched:
    """``python -m llmops_ci.engines.promptflow.jobs`` in a session of its own, its output in ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="llmops-")
    env = home.environment(base, Path(tmp))
    env["PF_DISABLE_TRACING"] = "true"  # tokens come from the proxy; no span per call
    read_fd, write_fd = os.pipe()
    log = log_path.open("a", encoding="utf-8")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", MODULE, str(write_fd), str(workers)],
            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, cwd=home.root / "work", env=env,
            start_new_session=True, text=True, pass_fds=(write_fd,))
    except BaseException:
        os.close(read_fd)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(write_fd)
    return Launched(proc, os.fdopen(read_fd, "r", encoding="utf-8"), log, tmp, home, base, workers, log_path)
