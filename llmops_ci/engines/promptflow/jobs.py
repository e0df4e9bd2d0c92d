"""The warm executor's main process: ``python -m llmops_ci.engines.promptflow.jobs <result-fd> <workers>``,
started by ``launch`` inside the private home (environment set by the parent). Jobs come as JSON lines on stdin
(connection secrets never touch a file); events go back as JSON lines on the result fd (stdout and stderr are the
log). Each job is forked into a job process of its own (``worker.Job``).

Kept between the steps of a CI job (``linger``): a caller that sends ``{"op": "keep"}`` before it goes leaves the
process running. Jobs still running then are stopped (nobody can be told their results), connections stored are
removed, and the process waits on its Unix socket (``$TMPDIR/executor.sock``, in a folder only its user can enter)
for the next step, which sends jobs and reads events there. Nobody for ``idle_s`` seconds: it removes its private
folders and the state dir's pointer to it, and ends.
"""

from __future__ import annotations

import contextlib
import gc
import json
import multiprocessing
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from llmops_ci.engines.promptflow.forking import fork, warm_up
from llmops_ci.engines.promptflow.worker import Events, Job, tag_requests

SOCKET = "executor.sock"  # in the executor's private TMPDIR (short: a socket path may not exceed 107 bytes)


class Client:
    """Who sends jobs and reads events: the step that started the process (stdin and the events pipe), or a later
    step of the job, connected to the socket."""

    def __init__(self, in_fd: int, out: TextIO, sock: socket.socket | None = None) -> None:
        self.in_fd, self.out, self.sock = in_fd, out, sock
        self.buffer = b""
        self.reading = True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.out.close()
        if self.sock is not None:
            self.sock.close()


class Main:
    """The warm process: reads jobs, forks a job process for each, relays their events whole. Single-threaded,
    so that nothing holds a lock at the moment it forks."""

    def __init__(self, client: Client, workers: int, listener: socket.socket | None = None) -> None:
        self.client: Client | None = client
        self.workers = workers
        self.slots = multiprocessing.get_context("fork").BoundedSemaphore(workers)
        self.jobs: dict[int, dict[str, Any]] = {}  # read fd -> {"id", "pid", "buffer", "done"}
        self.stored: set[str] = set()
        self.cwd = os.getcwd()
        self.listener, self.idle_s = listener, 0.0
        self.keep = False
        self.pointer: Path | None = None
        self.ends_alone = False  # nobody will stop it: it removes its own folders and pointer at its end

    def send(self, event: dict[str, Any]) -> None:
        self.emit(json.dumps(event, default=str))

    def emit(self, raw: str) -> None:
        if self.client is None:  # its step went: nobody reads this job's events any more
            return
        try:
            self.client.out.write(raw + "\n")
            self.client.out.flush()
        except OSError:
            self.lost_client()

    def start(self, req: dict[str, Any]) -> None:
        if req["kind"] != "dag":
            self.stored.update(spec["name"] for spec in req.get("provider_connections") or [])
        read_fd, write_fd = os.pipe()

        def child() -> int:
            Job(req, Events(write_fd, req["id"]), self.slots, self.workers).handle()
            return 0

        pid = fork(child, read_fd, *self.inherited())
        os.close(write_fd)
        self.jobs[read_fd] = {"id": req["id"], "pid": pid, "buffer": b"", "done": False}

    def inherited(self) -> list[int]:
        """The descriptors a forked child must close: the caller's, the socket's and the other jobs' pipes."""
        fds = {*self.jobs}
        if self.listener is not None:
            fds.add(self.listener.fileno())
        if self.client is not None:
            fds.add(self.client.in_fd)
            with contextlib.suppress(OSError, ValueError):
                fds.add(self.client.out.fileno())
        return sorted(fds)

    def relay(self, fd: int) -> None:
        job = self.jobs[fd]
        chunk = os.read(fd, 1 << 16)
        if chunk:
            job["buffer"] += chunk
            *complete, job["buffer"] = job["buffer"].split(b"\n")
            for raw in complete:
                if raw.strip():
                    event = json.loads(raw)
                    job["done"] = job["done"] or event.get("event") == "done"
                    self.emit(raw.decode("utf-8"))
            return
        os.close(fd)
        del self.jobs[fd]
        try:
            _, status = os.waitpid(job["pid"], 0)
        except ChildProcessError:
            status = 0
        if not job["done"]:
            how = (f"was killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exited with code {os.WEXITSTATUS(status)}")
            self.send({"id": job["id"], "event": "done", "status": "Failed",
                       "error": f"the run's executor process {how} (out of memory, or a tool ended it)"})

    def read_client(self, client: Client) -> None:
        chunk = os.read(client.in_fd, 1 << 16)
        if not chunk:
            if self.keep:
                self.lost_client()
            else:
                client.reading = False  # its step is ending: finish the jobs it sent, then end
            return
        client.buffer += chunk
        *complete, client.buffer = client.buffer.split(b"\n")
        for raw in complete:
            if not raw.strip():
                continue
            req = json.loads(raw)
            if req["op"] == "stop":
                client.reading = False
                self.keep = False  # asked to end: no later step comes in
                return
            if req["op"] == "keep":
                self.pointer = Path(req["pointer"])
                if self.listener is not None:
                    self.keep, self.idle_s = True, float(req["idle_s"])
                else:  # its caller leaves it its folders: it ends with this step and removes them itself
                    self.ends_alone = True
                continue
            self.start(req)

    def lost_client(self) -> None:
        """The step that sent the jobs went (kept between steps: the normal end of a step). What still runs was its
        and cannot be reported to anyone: stopped. What it stored is removed before the next step comes."""
        if self.client is None:
            return
        self.client.close()
        self.client = None
        self.kill_jobs()
        self.remove_connections()

    def kill_jobs(self) -> None:
        """Each job process with its line processes: a line busy in a tool never reads its closed pipe. The job is
        stopped first so that it forks no line while its children are listed."""
        for job in list(self.jobs.values()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(job["pid"], signal.SIGSTOP)
            for pid in [*descendants(job["pid"]), job["pid"]]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def serve(self) -> None:
        while True:
            client = self.client
            if not self.jobs and (client.reading is False if client is not None else not self.keep):
                return  # asked to stop (or its caller went, not kept) and every job it sent is done
            fds = list(self.jobs)
            if client is not None and client.reading:
                fds.append(client.in_fd)
            elif client is None and self.keep and self.listener is not None:
                fds.append(self.listener.fileno())
            idle = client is None and not self.jobs
            ready, _, _ = select.select(fds, [], [], self.idle_s if idle else None)
            if not ready and idle:
                self.ends_alone = True
                return
            for fd in ready:
                if fd in self.jobs:
                    self.relay(fd)
                elif client is not None and fd == client.in_fd:
                    self.read_client(client)
                elif self.listener is not None and fd == self.listener.fileno() and self.client is None:
                    conn, _ = self.listener.accept()
                    self.client = Client(conn.fileno(), conn.makefile("w", encoding="utf-8"), conn)

    def remove_connections(self) -> None:
        """Secrets must not outlive the step in the store (the state dir may become a CI artifact). In a process of
        its own: this one keeps forking job processes, which must not inherit the store's open database."""
        if not self.stored:
            return
        names = sorted(self.stored)
        self.stored.clear()

        def remove() -> int:
            from promptflow.client import PFClient

            pf = PFClient()
            for name in names:
                try:
                    pf.connections.delete(name)
                except Exception as exc:  # keep removing the others
                    print(f"could not remove connection {name}: {exc}", file=sys.stderr)
            return 0

        with contextlib.suppress(ChildProcessError):
            os.waitpid(fork(remove, *self.inherited()), 0)


def descendants(root: int) -> list[int]:
    """The processes below ``root`` (children first found, then theirs), from /proc; none where there is none."""
    parents: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", encoding="utf-8") as fh:
                    ppid = int(fh.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def leave_no_trace(pointer: Path | None) -> None:
    """A kept executor nobody came back to: its private home and temporary folder, and the state dir's pointer to
    it (if it still names this process), go with it."""
    for var in ("PF_HOME_DIRECTORY", "TMPDIR"):
        folder = os.environ.get(var)
        if folder and Path(folder).name.startswith(("llmops-pf-", "llmops-")):
            shutil.rmtree(folder, ignore_errors=True)
    if pointer is not None:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(pointer.read_text(encoding="utf-8")).get("pid") == os.getpid():
                pointer.unlink()


def listen() -> socket.socket | None:
    """The socket a later step of the job connects to; None when it cannot be made (a path past the length limit
    of a socket's): this executor then simply ends with its step."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(Path(os.environ.get("TMPDIR") or tempfile.gettempdir()) / SOCKET))
        sock.listen(1)
    except OSError as exc:
        sock.close()
        print(f"llmops-ci: the executor cannot wait for a later step ({exc})", file=sys.stderr, flush=True)
        return None
    return sock


def load() -> None:
    """Import prompt flow's executor: the fixed cost of the step, paid once (see the timing line)."""
    # importing makes many objects and few cycles: the collector's passes over them would cost a fifth of it
    gc.disable()
    try:
        import promptflow.executor  # noqa: F401

        tag_requests()
        warm_up()
    finally:
        # frozen first: else the collector's first pass once enabled walks every object the import made (0.1 s)
        gc.freeze()
        gc.enable()


def main() -> int:
    listener = listen()
    worker = Main(Client(0, os.fdopen(int(sys.argv[1]), "w", encoding="utf-8")), int(sys.argv[2]), listener)

    def stop(signum: int, frame: Any) -> None:
        worker.kill_jobs()
        worker.remove_connections()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started = time.monotonic()
    load()
    import threading

    print(f"llmops-ci timing: promptflow loaded in {time.monotonic() - started:.2f} s "
          f"({threading.active_count()} thread(s))", file=sys.stderr, flush=True)
    worker.send({"event": "ready"})
    worker.serve()
    worker.remove_connections()
    if worker.ends_alone:
        leave_no_trace(worker.pointer)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter teardown (prompt flow's thread pools and atexit hooks)
    os._exit(code)
