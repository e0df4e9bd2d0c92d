"""The parent's handle on the warm executor process (``jobs``): jobs out, events back, on its stdin and events pipe
when this step started it, on its socket when an earlier step of the CI job kept it (``linger``)."""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, TextIO, cast

from llmops_ci.core.errors import CheckFailed
from llmops_ci.engines.plumbing import reap
from llmops_ci.engines.promptflow import linger
from llmops_ci.engines.promptflow.home import PFHome
from llmops_ci.engines.promptflow.launch import Launched, launch


class Worker:
    """One executor process, started now, taken over from ``python -m llmops_ci`` (``launched``), or kept by an
    earlier step (``kept``, connected)."""

    def __init__(self, home: PFHome, environ: dict[str, str], workers: int, log_path: Path,
                 launched: Launched | None = None, kept: tuple[linger.Kept, socket.socket] | None = None) -> None:
        self.log_path = log_path
        self._fingerprint = linger.fingerprint(environ, workers, log_path)
        self.proc: subprocess.Popen[str] | None = None
        self._kept: linger.Kept | None = None
        self._sock: socket.socket | None = None
        self._log: TextIO | None = None
        if kept is not None:
            self._kept, self._sock = kept
            self.pid, self._tmp = self._kept.pid, str(self._kept.tmp)
            self._out: TextIO = self._sock.makefile("w", encoding="utf-8")
            self._events: TextIO = self._sock.makefile("r", encoding="utf-8")
        else:
            started = launched or launch(home, environ, workers, log_path)
            self.proc, self.pid, self._tmp, self._log = started.proc, started.proc.pid, started.tmp, started.log
            assert started.proc.stdin is not None
            self._out, self._events = cast(TextIO, started.proc.stdin), started.events
        self._queues: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._abandoned = False
        threading.Thread(target=self._read, daemon=True, name="llmops-worker-events").start()

    def alive(self) -> bool:
        return self.proc.poll() is None if self.proc is not None else linger.alive(self.pid)

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # a socket shut down under the loop ends it too
            for raw in self._events:
                try:
                    event = json.loads(raw)
                except ValueError:  # not ours: never let one bad line strand every waiting run
                    continue
                with self._lock:
                    target = self._queues.get(event.get("id", -1))
                if target is not None:
                    target.put(event)
        with self._lock:  # the process is gone: nobody waits forever
            for target in self._queues.values():
                target.put({"event": "gone"})

    def _send(self, message: dict[str, Any]) -> None:
        self._out.write(json.dumps(message) + "\n")
        self._out.flush()

    def call(self, request: dict[str, Any], on_progress: Any) -> dict[str, Any]:
        with self._lock:
            self._next += 1
            job_id = self._next
            events: queue.Queue[dict[str, Any]] = queue.Queue()
            self._queues[job_id] = events
            try:
                self._send({**request, "id": job_id})
            except (BrokenPipeError, OSError, ValueError):
                events.put({"event": "gone"})
        finished = False
        try:
            while True:
                event = events.get()
                if event["event"] == "progress":
                    on_progress(int(event["done"]))
                elif event["event"] == "done":
                    finished = True
                    return event
                else:
                    tail = "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
                    code = self.proc.poll() if self.proc is not None else "unknown"
                    raise CheckFailed(f"the prompt flow executor stopped (exit {code}); its log is "
                                      f"{self.log_path}:\n{tail}")
        finally:
            with self._lock:
                self._queues.pop(job_id, None)
                # left before its end (Ctrl-C, SIGTERM): the job may still run there; the executor is not reusable
                self._abandoned = self._abandoned or not finished

    def close(self, keep_s: float = 0.0, state_dir: Path | None = None) -> bool:
        """Leave the executor to the next step of the job (``keep_s`` > 0, nothing running: True), or ask it to
        finish (it removes what it stored) and make sure its whole session is gone. With jobs still running (an
        interrupt, a crash) it is stopped at once: SIGTERM, on which it removes what it stored and exits."""
        with self._lock:
            busy = bool(self._queues) or self._abandoned
        if not busy and keep_s > 0 and state_dir is not None and self.alive():
            try:
                self._send({"op": "keep", "idle_s": keep_s, "pointer": str(state_dir / linger.POINTER)})
                linger.remember(state_dir, self.pid, Path(self._tmp), self._fingerprint)
            except (OSError, ValueError):
                pass
            else:
                self._detach()
                return True
        # an executor that never got a job (started ahead, then nothing ran) is not waited for: SIGTERM at once
        if not busy and self._next and self.alive():
            with contextlib.suppress(BrokenPipeError, OSError, ValueError):
                self._send({"op": "stop"})
            self._detach()
            deadline = time.monotonic() + 10
            while self.alive() and time.monotonic() < deadline:
                if self.proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(timeout=0.05)
                else:
                    time.sleep(0.02)
        if self.proc is not None:
            reap(self.proc)
        elif self._kept is not None:
            linger.stop(self._kept, state_dir)
        self._detach()
        shutil.rmtree(self._tmp, ignore_errors=True)
        return False

    def _detach(self) -> None:
        """Close this end: the executor sees its caller go (kept: it waits for the next; else it ends)."""
        with contextlib.suppress(OSError, ValueError):
            self._out.close()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self._log is not None:
            self._log.close()
