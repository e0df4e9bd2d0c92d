"""The warm executor: one process per step that runs every flow and evaluation of the step in-process.

Started by ``local.Worker`` as ``python -m llmops_ci.backends.pf_worker <result-fd> <workers>`` inside the
private home (environment set by the parent). Jobs come on stdin as JSON lines (connection secrets never
touch a file); events go back as JSON lines on the result fd (stdout and stderr are the log). Each job builds
prompt flow's own ``FlowExecutor`` for its flow (DAG, flex or prompty) and calls ``exec_line`` from threads:
at most ``<workers>`` lines are in flight over all jobs at once, so lines cost the LLM call, not a process hop.
Inputs are mapped by prompt flow's own ``BatchInputsProcessor`` (``${data.x}``, ``${run.outputs.x}``,
``${run.inputs.x}``), aggregation by the executor's own ``exec_aggregation``, as ``pf.run`` does. A line past
its timeout is reported as timed out and abandoned (a thread cannot be killed); ``os._exit`` ends the process.
See docs/promptflow-runtime.md.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmops_ci.backends.pf_runner import make_connection

LINE_HEADER = "X-Llmops-Line"  # llm_cache.LINE_HEADER; not imported: the proxy module pulls in requests eagerly
CURRENT_LINE: contextvars.ContextVar[str | None] = contextvars.ContextVar("llmops_line", default=None)
GRACE_S = 1.0  # the DAG executor times a line out itself; this catches flex/prompty and stuck schedulers


class Channel:
    def __init__(self, fd: int) -> None:
        self._out = os.fdopen(fd, "w", encoding="utf-8")
        self._lock = threading.Lock()

    def send(self, event: dict[str, Any]) -> None:
        text = json.dumps(event, default=str)
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()


class Environment:
    """Process-wide environment variables of the jobs running now: jobs that disagree take turns."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: dict[str, tuple[str, int]] = {}

    def acquire(self, values: dict[str, str]) -> None:
        with self._cond:
            self._cond.wait_for(lambda: all(self._held.get(k, (v, 0))[0] == v for k, v in values.items()))
            for key, value in values.items():
                self._held[key] = (value, self._held.get(key, (value, 0))[1] + 1)
                os.environ[key] = value

    def release(self, values: dict[str, str]) -> None:
        with self._cond:
            for key in values:
                value, count = self._held[key]
                if count == 1:
                    del self._held[key]
                    os.environ.pop(key, None)
                else:
                    self._held[key] = (value, count - 1)
            self._cond.notify_all()


def tag_requests() -> None:
    """Every HTTP request a line makes carries ``<run>|<line>``: the proxy counts tokens per line from it."""
    import importlib

    def wrap(send: Callable[..., Any]) -> Callable[..., Any]:
        def tagged(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            tag = CURRENT_LINE.get()
            if tag is not None:
                request.headers[LINE_HEADER] = tag
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


def share_stdout() -> None:
    """prompt flow swaps ``sys.stdout`` per line with a non-reentrant manager: from many threads at once the
    swaps interleave and wrappers nest without end. Lines share one swap instead (node logs are not kept)."""
    from promptflow._core.log_manager import NodeLogManager

    lock = threading.Lock()
    depth = [0]
    saved: list[Any] = []

    def enter(self: Any) -> Any:
        with lock:
            if depth[0] == 0:
                saved[:] = [sys.stdout, sys.stderr]
            depth[0] += 1
        return self

    def leave(self: Any, *args: Any) -> None:
        with lock:
            depth[0] -= 1

    NodeLogManager.__enter__ = enter
    NodeLogManager.__exit__ = leave


class Worker:
    def __init__(self, channel: Channel, workers: int) -> None:
        self.channel = channel
        self.slots = threading.BoundedSemaphore(workers)
        self.env = Environment()
        self.stored: set[str] = set()
        self._store_lock = threading.Lock()
        self._pf: Any = None
        self._create_lock = threading.Lock()
        self.cwd = os.getcwd()

    def create(self, req: dict[str, Any], **kwargs: Any) -> Any:
        """``FlowExecutor.create`` changes the process's working directory while it loads the tools and changes
        it back to what it found: two at once leave it in another job's (soon deleted) folder. One at a time."""
        from promptflow.executor import FlowExecutor

        with self._create_lock:
            try:
                return FlowExecutor.create(Path(req["flow"]), self.executor_connections(req["provider_connections"]),
                                           Path(req["working_dir"]), raise_ex=False, **kwargs)
            finally:
                os.chdir(self.cwd)

    # -- connections ---------------------------------------------------------------------------------
    def executor_connections(self, specs: list[dict[str, Any]]) -> dict[str, Any]:
        return {spec["name"]: make_connection(spec)._to_execution_connection_dict() for spec in specs}

    def store_connections(self, specs: list[dict[str, Any]]) -> None:
        """Flex flows and prompty files look connections up by name in the private store."""
        with self._store_lock:
            if self._pf is None:
                from promptflow.client import PFClient

                self._pf = PFClient()
            for spec in specs:
                self._pf.connections.create_or_update(make_connection(spec))
                self.stored.add(spec["name"])

    def remove_connections(self) -> None:
        with self._store_lock:
            for name in sorted(self.stored):
                try:
                    self._pf.connections.delete(name)
                except Exception as exc:  # keep removing the others
                    print(f"could not remove connection {name}: {exc}", file=sys.stderr)
            self.stored.clear()

    # -- one batch run ---------------------------------------------------------------------------------
    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        from promptflow.batch._batch_inputs_processor import BatchInputsProcessor

        folder = Path(req["working_dir"])
        env = {str(k): str(v) for k, v in (req.get("environment_variables") or {}).items()}
        if req["kind"] != "dag" and req.get("provider_connections"):
            self.store_connections(req["provider_connections"])
        self.env.acquire(env)
        marks = [time.monotonic()]
        try:
            executor = self.create(req, line_timeout_sec=req["line_timeout_sec"], init_kwargs=req.get("init") or None)
            marks.append(time.monotonic())
            input_dirs = {"data": req["data"]}
            if req.get("base"):
                input_dirs.update({"run.outputs": req["base"]["outputs"], "run.inputs": req["base"]["data"]})
            processor = inputs_processor(BatchInputsProcessor)(
                folder, executor.get_inputs_definition(), message_format=getattr(executor, "_message_format", "basic"))
            inputs = processor.process_batch_inputs(input_dirs, req.get("column_mapping") or {})
            marks.append(time.monotonic())
            results = self._lines(req, executor, inputs)
            marks.append(time.monotonic())
            metrics = self._aggregate(executor, inputs, results) if results else {}
            marks.append(time.monotonic())
        finally:
            self.env.release(env)
        spans = [b - a for a, b in itertools.pairwise(marks)]
        print(f"llmops-ci timing: {req['name']}: executor created {spans[0]:.2f} s, inputs mapped {spans[1]:.2f} s, "
              f"{len(inputs)} lines {spans[2]:.2f} s, aggregation {spans[3]:.2f} s", file=sys.__stderr__, flush=True)
        return {"lines": [r["record"] for r in results], "metrics": metrics, "status": "Completed"}

    def _lines(self, req: dict[str, Any], executor: Any, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from promptflow._constants import LINE_NUMBER_KEY

        timeout = float(req["line_timeout_sec"])
        lock = threading.Condition()
        results: dict[int, dict[str, Any]] = {}
        started: dict[int, float] = {}
        run_id = req["name"]

        def work(index: int, line_inputs: dict[str, Any]) -> None:
            CURRENT_LINE.set(f"{req['tag']}|{index}")
            try:
                result = executor.exec_line(line_inputs, index=index, run_id=run_id, line_timeout_sec=int(timeout))
                record = line_record(index, result)
            except BaseException as exc:  # a line's failure is its record, never the run's
                record = failed_record(index, line_inputs, f"{type(exc).__name__}: {exc}", type(exc).__name__)
                result = None
            with lock:
                if index not in results:
                    results[index] = {"record": record, "result": result}
                    self.slots.release()
                    lock.notify_all()

        def expire(now: float) -> None:
            for index, t0 in started.items():
                if index not in results and now - t0 > timeout + GRACE_S:
                    line_inputs = next(i for i in inputs if i[LINE_NUMBER_KEY] == index)
                    results[index] = {"record": failed_record(
                        index, line_inputs, f"Line {index} execution timeout for exceeding {int(timeout)} seconds "
                        "(abandoned: it may still be running)", "LineExecutionTimeoutError"), "result": None}
                    self.slots.release()

        reported = 0
        for line_inputs in inputs:
            while not self.slots.acquire(timeout=0.2):
                with lock:
                    expire(time.monotonic())
            index = int(line_inputs[LINE_NUMBER_KEY])
            with lock:
                started[index] = time.monotonic()
            ctx = contextvars.copy_context()
            threading.Thread(target=ctx.run, args=(work, index, dict(line_inputs)), daemon=True,
                             name=f"line-{req['tag']}-{index}").start()
            if len(results) != reported:
                reported = len(results)
                self.channel.send({"id": req["id"], "event": "progress", "done": reported})
        with lock:
            while len(results) < len(inputs):
                lock.wait(0.2)
                expire(time.monotonic())
                if len(results) != reported:
                    reported = len(results)
                    self.channel.send({"id": req["id"], "event": "progress", "done": reported})
        return [results[k] for k in sorted(results)]

    @staticmethod
    def _aggregate(executor: Any, inputs: list[dict[str, Any]], results: list[dict[str, Any]]) -> dict[str, Any]:
        """The aggregation nodes over the lines that completed, exactly as prompt flow's batch engine feeds them."""
        from promptflow._utils.execution_utils import (
            apply_default_value_for_input,
            collect_lines,
            get_aggregation_inputs_properties,
        )
        from promptflow._utils.utils import transpose
        from promptflow.executor._result import LineResult
        from promptflow.executor._script_executor import ScriptExecutor
        from promptflow.executor.flow_validator import FlowValidator

        if not executor.has_aggregation_node:
            return {}
        done = [r["result"] for r in results if isinstance(r["result"], LineResult)
                and r["record"]["status"] == "Completed"]
        if isinstance(executor, ScriptExecutor):
            from promptflow.contracts.types import AttrDict

            outputs = [AttrDict(r.output) if isinstance(r.output, dict) else r.output for r in done]
            return dict(executor.exec_aggregation(None, outputs).metrics or {})
        flow = executor._flow
        by_line = {int(i["line_number"]): i for i in inputs}
        line_inputs = [FlowValidator.ensure_flow_inputs_type(
            flow=flow, inputs=apply_default_value_for_input(flow.inputs, by_line[r.run_info.index])) for r in done]
        keys = get_aggregation_inputs_properties(flow)
        aggregation_inputs = collect_lines(list(range(len(done))),
                                           transpose([r.aggregation_inputs for r in done], keys=keys))
        result = executor.exec_aggregation(transpose(line_inputs, keys=list(flow.inputs.keys())), aggregation_inputs)
        return dict(result.metrics or {})

    # -- one line through a flow (the test step) -----------------------------------------------------------
    def test(self, req: dict[str, Any]) -> dict[str, Any]:
        env = {str(k): str(v) for k, v in (req.get("environment_variables") or {}).items()}
        if req["kind"] != "dag" and req.get("provider_connections"):
            self.store_connections(req["provider_connections"])
        self.env.acquire(env)
        try:
            executor = self.create(req)
            CURRENT_LINE.set(f"{req['tag']}|0")
            result = executor.exec_line(req.get("inputs") or {}, index=0, run_id=req["name"])
        finally:
            self.env.release(env)
        info = result.run_info
        nodes = []
        for name, node in (result.node_run_infos or {}).items():
            metrics = node.system_metrics or {}
            nodes.append({"node": name, "status": _status(node.status), "duration_s": metrics.get("duration"),
                          "tokens": metrics.get("total_tokens"), "error": (node.error or {}).get("message")})
        output = _outputs(result.output)
        return {"status": _status(info.status), "output": output, "error": (info.error or {}).get("message"),
                "nodes": nodes}

    def handle(self, req: dict[str, Any]) -> None:
        try:
            outcome = self.test(req) if req["op"] == "test" else self.run(req)
        except Exception as exc:  # reported to the parent, which decides the exit code
            outcome = {"status": "Failed", "error": f"{type(exc).__name__}: {exc}", "user_error": is_user_error(exc),
                       "traceback": traceback.format_exc()}
        self.channel.send({"id": req["id"], "event": "done", **outcome})


def inputs_processor(base: type) -> type:
    """prompt flow's own input processor, reading plain JSON Lines without pandas (its import is ~0.7 s of
    every step) when that gives exactly what pandas gives; anything else goes to prompt flow's loader."""

    class Inputs(base):
        def _resolve_data_from_input_path(self, input_path: Path) -> list[dict[str, Any]]:
            rows = plain_jsonl(Path(input_path))
            if rows is None:
                return list(super()._resolve_data_from_input_path(input_path))
            return list(self._multimedia_processor.resolve_multimedia_data_recursively(Path(input_path).parent, rows))

    return Inputs


def _date_like(key: str) -> bool:
    """pandas.read_json turns such columns into timestamps (``keep_default_dates``)."""
    low = key.lower()
    return low.endswith(("_at", "_time")) or low in ("modified", "date", "datetime") or low.startswith("timestamp")


def plain_jsonl(path: Path) -> list[dict[str, Any]] | None:
    """The rows of a ``.jsonl`` file when pandas (``dtype=object``, as prompt flow reads it) would give the very same
    dicts: every line an object with the same keys, no null, no date-like column name, ints within int64."""
    if path.suffix != ".jsonl" or not path.is_file():
        return None
    try:
        raw = path.read_bytes()
        if not raw or raw.startswith(b"\xef\xbb\xbf"):
            return None
        rows = [json.loads(line) for line in raw.decode("utf-8").split("\n") if line.strip()]
    except (OSError, ValueError):
        return None
    if not rows or not all(isinstance(r, dict) for r in rows):
        return None
    keys = set(rows[0])
    for row in rows:
        if set(row) != keys or any(v is None or (isinstance(v, int) and not -2**63 <= v < 2**63)
                                   for v in row.values()):
            return None
    if any(_date_like(k) for k in keys):
        return None
    return rows


def _status(status: Any) -> str:
    return str(getattr(status, "value", status))


def _outputs(output: Any) -> Any:
    if isinstance(output, dict):
        return {k: v for k, v in output.items() if k != "line_number"}
    return output


def line_record(index: int, result: Any) -> dict[str, Any]:
    info = result.run_info
    metrics = info.system_metrics or {}
    error: dict[str, Any] = info.error or {}
    duration = metrics.get("duration")
    if not isinstance(duration, (int, float)) and info.start_time and info.end_time:
        duration = (info.end_time - info.start_time).total_seconds()
    failing = None
    if error:
        # the first failing node is the cause; later ones are usually Canceled by it
        for name, node in (result.node_run_infos or {}).items():
            status = _status(node.status)
            if status == "Failed" or (status == "Canceled" and failing is None):
                failing = name
                if status == "Failed":
                    break
    inner: dict[str, Any] = error["innerError"] if isinstance(error.get("innerError"), dict) else {}
    return {"line": index, "status": _status(info.status),
            "inputs": {k: v for k, v in (info.inputs or {}).items() if k != "line_number"},
            "outputs": _outputs(info.output), "duration_s": duration,
            "tokens": {k: int(metrics.get(f"{k}_tokens") or 0) for k in ("prompt", "completion", "total")},
            "error": error.get("message"), "error_code": inner.get("code") or error.get("code"), "node": failing,
            # the exception chain as prompt flow records it: the parent tells an outside-service failure from it
            "error_detail": _plain(error) if error else None}


def failed_record(index: int, inputs: dict[str, Any], message: str, code: str) -> dict[str, Any]:
    return {"line": index, "status": "Failed", "inputs": {k: v for k, v in inputs.items() if k != "line_number"},
            "outputs": None, "duration_s": None, "tokens": {"prompt": 0, "completion": 0, "total": 0},
            "error": message, "error_code": code, "node": None}


def is_user_error(exc: BaseException) -> bool:
    return any(cls.__name__ in ("UserErrorException", "ValidationException", "InvalidFlowError")
               for cls in type(exc).__mro__)


def main() -> int:
    channel = Channel(int(sys.argv[1]))
    worker = Worker(channel, int(sys.argv[2]))

    def stop(signum: int, frame: Any) -> None:
        # secrets must not outlive the step in the store (the state dir may become a CI artifact)
        worker.remove_connections()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started = time.monotonic()
    import promptflow.executor  # noqa: F401  - the fixed cost of the step, paid once: see the timing line

    tag_requests()
    share_stdout()
    print(f"llmops-ci timing: promptflow loaded in {time.monotonic() - started:.2f} s", file=sys.stderr, flush=True)
    channel.send({"event": "ready"})
    threads = []
    for raw in sys.stdin:
        if not raw.strip():
            continue
        req = json.loads(raw)
        if req["op"] == "stop":
            break
        thread = threading.Thread(target=worker.handle, args=(req,), daemon=True, name=f"job-{req['id']}")
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    worker.remove_connections()
    return 0


def _plain(value: Any) -> Any:
    """``value`` as JSON can carry it (an error record may hold exception objects)."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return None


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Abandoned (timed-out) lines may still run in their threads: end without waiting for them.
    os._exit(code)

