"""The warm executor: one process per step that runs every flow and evaluation of the step, with prompt flow's
own per-line isolation (one line at a time per process) and without its re-import.

The main process (``jobs``, started by ``launch``) reads the jobs and forks a job process for each; this module
is what runs in the job and line processes.

Processes: the main one imports prompt flow once and stays single-threaded. Each job (a run, or one ``test``
line) is forked into a job process of its own, which sets the job's environment variables, builds prompt
flow's ``FlowExecutor`` (DAG, flex or prompty), maps the inputs and then forks warm line processes that run
one line at a time each (``exec_line``), lines handed out over pipes as processes free up, at most
``<workers>`` lines in flight over all jobs (one semaphore shared by every process). Whatever a tool changes
process-wide (``sys.stdout``, module globals, ``os.environ``, the working directory, ``random``, signal
handlers) stays in its line process, as in ``pf run create``; metrics, tokens and proxy routes stay in their
job process. Inputs are mapped by prompt flow's own ``BatchInputsProcessor``, aggregation by the executor's
own ``exec_aggregation``, as ``pf.run`` does. A line past its timeout has its process killed and replaced.
See docs/promptflow-runtime.md.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any

from llmops_ci.engines.promptflow.forking import fork
from llmops_ci.engines.promptflow.lines import (
    aggregate,
    failed_record,
    inputs_processor,
    is_user_error,
    line_record,
    outputs_of,
    status_of,
)
from llmops_ci.engines.promptflow.runner import make_connection

LINE_HEADER = "X-Llmops-Line"  # llm_cache.LINE_HEADER; not imported: the proxy module pulls in requests eagerly
PROGRESS_S = 0.1  # at most this often a progress event (the bar shows seconds, not lines)
GRACE_S = 1.0  # the DAG executor times a line out itself; this catches flex/prompty and stuck schedulers
# "<run tag>|<line>" of what this process runs now: a line process runs one line at a time, so every request
# it makes (from any thread the tool starts) is that line's
LINE_TAG: str | None = None
# replay: the only origin a request may go to (the proxy); anything else fails the line instead of going live
ONLY_ORIGIN: str | None = None


class LiveCallRefused(ConnectionError):
    pass


def tag_requests() -> None:
    """Every HTTP request carries ``<run>|<line>``: the proxy finds the run and counts tokens per line from it.
    In replay nothing may leave except to the proxy: a call that escaped it fails here, never goes live."""
    import importlib

    def wrap(send: Any) -> Any:
        def tagged(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            if ONLY_ORIGIN is not None:
                url = str(getattr(request, "url", ""))
                if not (url == ONLY_ORIGIN or url.startswith(ONLY_ORIGIN + "/")):
                    raise LiveCallRefused(
                        f"llmops-ci replay: a call to {url.split('?')[0]} does not go through the record/replay "
                        "proxy, so it cannot be replayed; point the client at a connection (or "
                        "OPENAI_BASE_URL / AZURE_OPENAI_ENDPOINT) instead of a literal endpoint")
            if LINE_TAG is not None:
                request.headers[LINE_HEADER] = LINE_TAG
            return send(self, request, *args, **kwargs)
        return tagged

    # openai 3.x ships its own fork of httpx as ``httpx2``
    for module, classes in (("httpx", ("Client", "AsyncClient")), ("httpx2", ("Client", "AsyncClient")),
                            ("requests.adapters", ("HTTPAdapter",))):
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        for name in classes:
            cls = getattr(found, name, None)
            if cls is not None:
                cls.send = wrap(cls.send)


class Events:
    """A job process's events, JSON lines on its own pipe to the main process (which relays them whole)."""

    def __init__(self, fd: int, job_id: int) -> None:
        self._out = os.fdopen(fd, "w", encoding="utf-8")
        self.job_id = job_id

    def send(self, event: dict[str, Any]) -> None:
        self._out.write(json.dumps({"id": self.job_id, **event}, default=str) + "\n")
        self._out.flush()


class LineProcess:
    """A warm process forked from a job with its executor built: runs the lines it is sent, one at a time."""

    def __init__(self, executor: Any, req: dict[str, Any], close: tuple[int, ...]) -> None:
        self.conn, theirs = multiprocessing.Pipe()
        self.pid = fork(lambda: self._serve(theirs, executor, req), self.conn.fileno(), *close)
        theirs.close()
        self.line: tuple[int, float, dict[str, Any]] | None = None  # (index, started, inputs) while busy

    @staticmethod
    def _serve(conn: multiprocessing.connection.Connection, executor: Any, req: dict[str, Any]) -> int:
        global LINE_TAG
        timeout = int(float(req["line_timeout_sec"]))
        while True:
            try:
                index, line_inputs = conn.recv()
            except EOFError:
                return 0
            LINE_TAG = f"{req['tag']}|{index}"
            try:
                result = executor.exec_line(line_inputs, index=index, run_id=req["name"], line_timeout_sec=timeout)
                record = line_record(index, result)
            except BaseException as exc:  # a line's failure is its record, never the run's
                record = failed_record(index, line_inputs, f"{type(exc).__name__}: {exc}", type(exc).__name__)
                result = None
            LINE_TAG = None
            if not executor.has_aggregation_node:
                result = None  # only aggregation needs the whole line result; the record says the rest
            try:
                conn.send((record, result))
            except Exception:  # an output pickle cannot carry: the record still can
                conn.send((record, None))

    def stop(self, kill: bool = False) -> None:
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.conn.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


class Job:
    """One job in its own process: its environment, its executor, its lines, its metrics."""

    def __init__(self, req: dict[str, Any], events: Events, slots: Any, workers: int) -> None:
        self.req, self.events, self.slots, self.workers = req, events, slots, workers

    def prepare(self) -> Any:
        global LINE_TAG, ONLY_ORIGIN
        req = self.req
        os.environ.update({str(k): str(v) for k, v in (req.get("environment_variables") or {}).items()})
        ONLY_ORIGIN = req.get("only_origin") or None
        LINE_TAG = f"{req['tag']}|"  # calls while the executor is built (a flex __init__) or while it aggregates
        if req["kind"] != "dag" and req.get("provider_connections"):
            from promptflow.client import PFClient  # flex flows and prompty files look connections up by name

            pf = PFClient()
            for spec in req["provider_connections"]:
                pf.connections.create_or_update(make_connection(spec))
        from promptflow.executor import FlowExecutor

        connections = {spec["name"]: make_connection(spec)._to_execution_connection_dict()
                       for spec in req["provider_connections"]}
        kwargs: dict[str, Any] = {}
        if req["op"] == "run":
            kwargs = {"line_timeout_sec": req["line_timeout_sec"], "init_kwargs": req.get("init") or None}
        executor = FlowExecutor.create(Path(req["flow"]), connections, Path(req["working_dir"]), raise_ex=False,
                                       **kwargs)
        os.chdir(req["working_dir"])  # lines run in the flow's folder, as pf.run's line processes do
        return executor

    def handle(self) -> None:
        try:
            outcome = self.test() if self.req["op"] == "test" else self.run()
        except Exception as exc:  # reported to the parent, which decides the exit code
            outcome = {"status": "Failed", "error": f"{type(exc).__name__}: {exc}", "user_error": is_user_error(exc),
                       "traceback": traceback.format_exc()}
        self.events.send({"event": "done", **outcome})

    # -- one batch run ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from promptflow.batch._batch_inputs_processor import BatchInputsProcessor

        req = self.req
        marks = [time.monotonic()]
        executor = self.prepare()
        marks.append(time.monotonic())
        input_dirs = {"data": req["data"]}
        if req.get("base"):
            input_dirs.update({"run.outputs": req["base"]["outputs"], "run.inputs": req["base"]["data"]})
        processor = inputs_processor(BatchInputsProcessor)(
            Path(req["working_dir"]), executor.get_inputs_definition(),
            message_format=getattr(executor, "_message_format", "basic"))
        inputs = processor.process_batch_inputs(input_dirs, req.get("column_mapping") or {})
        marks.append(time.monotonic())
        results = self.lines(executor, inputs)
        marks.append(time.monotonic())
        metrics = aggregate(executor, inputs, results) if results else {}
        marks.append(time.monotonic())
        spans = [b - a for a, b in itertools.pairwise(marks)]
        print(f"llmops-ci timing: {req['name']}: executor created {spans[0]:.2f} s, inputs mapped {spans[1]:.2f} s, "
              f"{len(inputs)} lines {spans[2]:.2f} s, aggregation {spans[3]:.2f} s", file=sys.stderr, flush=True)
        return {"lines": [r["record"] for r in results], "metrics": metrics, "status": "Completed"}

    def lines(self, executor: Any, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from promptflow._constants import LINE_NUMBER_KEY

        timeout = float(self.req["line_timeout_sec"])
        pending = deque((int(i[LINE_NUMBER_KEY]), dict(i)) for i in inputs)
        # a replayed run asks for fewer line processes (local.replay_processes): its lines wait on nothing
        most = max(1, min(self.workers, int(self.req.get("processes") or self.workers), len(pending)))
        idle: list[LineProcess] = []
        busy: list[LineProcess] = []
        results: dict[int, dict[str, Any]] = {}
        reported, sent = 0, 0.0
        close = (self.events._out.fileno(),)
        try:
            while pending or busy:
                while pending and (idle or len(busy) < most) and self.slots.acquire(block=not busy, timeout=0.2):
                    # a new line process must not hold its siblings' pipes open: they would never see their end
                    proc = idle.pop() if idle else LineProcess(
                        executor, self.req, (*close, *(p.conn.fileno() for p in (*idle, *busy))))
                    index, line_inputs = pending[0]
                    try:
                        proc.conn.send((index, line_inputs))
                    except OSError:  # it ended between lines (a thread of a tool ended it): the line goes to another
                        proc.stop(kill=True)
                        self.slots.release()
                        continue
                    pending.popleft()
                    proc.line = (index, time.monotonic(), line_inputs)
                    busy.append(proc)
                if not busy:
                    continue
                ready = multiprocessing.connection.wait([p.conn for p in busy], timeout=0.2)
                now = time.monotonic()
                for proc in list(busy):
                    assert proc.line is not None
                    index, started, line_inputs = proc.line
                    if proc.conn in ready:
                        try:
                            record, result = proc.conn.recv()
                        except (EOFError, OSError):
                            record, result = failed_record(index, line_inputs, exit_message(proc.pid),
                                                           "LineProcessExited"), None
                            proc.stop(kill=True)
                        else:
                            if record.get("error_code") == "LineExecutionTimeoutError":
                                proc.stop(kill=True)  # its abandoned node threads may still run: not reused
                            else:
                                idle.append(proc)
                    elif now - started > timeout + GRACE_S:
                        proc.stop(kill=True)
                        record, result = failed_record(
                            index, line_inputs, f"Line {index} execution timeout for exceeding {int(timeout)} seconds",
                            "LineExecutionTimeoutError"), None
                    else:
                        continue
                    busy.remove(proc)
                    proc.line = None
                    results[index] = {"record": record, "result": result}
                    self.slots.release()
                if len(results) != reported and (now - sent >= PROGRESS_S or not (pending or busy)):
                    reported, sent = len(results), now
                    self.events.send({"event": "progress", "done": reported})
        finally:
            for proc in busy:
                proc.stop(kill=True)
                self.slots.release()
            for proc in idle:
                proc.stop()
        return [results[k] for k in sorted(results)]

    # -- one line through a flow (the test step) -----------------------------------------------------------
    def test(self) -> dict[str, Any]:
        global LINE_TAG
        executor = self.prepare()
        LINE_TAG = f"{self.req['tag']}|0"
        result = executor.exec_line(self.req.get("inputs") or {}, index=0, run_id=self.req["name"])
        info = result.run_info
        nodes = []
        for name, node in (result.node_run_infos or {}).items():
            metrics = node.system_metrics or {}
            nodes.append({"node": name, "status": status_of(node.status), "duration_s": metrics.get("duration"),
                          "tokens": metrics.get("total_tokens"), "error": (node.error or {}).get("message")})
        return {"status": status_of(info.status), "output": outputs_of(result.output),
                "error": (info.error or {}).get("message"), "nodes": nodes}


def exit_message(pid: int) -> str:
    """How a line process that closed its pipe ended (it is reaped here; a straggler is killed by the caller)."""
    status = 0
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            break
        if done:
            break
        time.sleep(0.01)
    how = (f"was killed by signal {os.WTERMSIG(status)}" if status and os.WIFSIGNALED(status)
           else f"exited with code {os.WEXITSTATUS(status)}" if status else "ended")
    return f"the line's process {how} while running it (a tool called os._exit, or ran out of memory)"
