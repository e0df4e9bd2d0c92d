"""Child process that drives Microsoft Agent Framework; the only module that imports ``agent_framework``.

It runs as ``python -m llmops_ci.engines.agent_framework.runner`` with the Agent Framework packages importable
(``agent-framework-core`` needs an OpenTelemetry newer than prompt flow 1.18.5 accepts, so they may live
in a directory of their own that the parent puts first on this process's ``PYTHONPATH``). The request
comes on stdin as JSON; the result is written as JSON to ``request["result"]``; each finished line is
also appended to ``request["lines"]`` so the parent can show progress.

What runs (``request["target"]``):
- ``agent``: a declarative agent YAML (already resolved by the parent: ``=Env.X`` and ``kind: reference``
  connections replaced, endpoints pointed at the record/replay proxy), loaded with ``AgentFactory``;
- ``workflow``: a declarative workflow YAML with its agents (other declarative agent files), through
  ``WorkflowFactory``;
- ``python``: ``module.py:attr``, an agent object, a workflow, or a factory returning either.

Every HTTP request a line makes carries the proxy's line header (``tag|line``) so the proxy counts each
line's tokens from the responses it sees, whichever client the flow's code built.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from llmops_ci.core.service_errors import exception_chain  # plain Python: the runner stays light
from llmops_ci.engines.runner_main import answer

LINE_HEADER = "X-Llmops-Line"  # llm_cache.LINE_HEADER (not imported: this process stays light)
_LINE: contextvars.ContextVar[str | None] = contextvars.ContextVar("llmops_line", default=None)


def _tag_requests() -> None:
    """Put the current line's header on every request of every httpx client (openai 3 uses ``httpx2``)."""
    for name in ("httpx", "httpx2"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        for cls_name in ("AsyncClient", "Client"):
            cls = getattr(module, cls_name, None)
            if cls is None or getattr(cls, "_llmops_tagged", False):
                continue
            original = cls.send

            def send(self: Any, request: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
                line = _LINE.get()
                if line is not None:
                    request.headers[LINE_HEADER] = line
                return __original(self, request, *args, **kwargs)

            cls.send = send
            cls._llmops_tagged = True


def _import_file(path: Path) -> Any:
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


async def _build(req: dict[str, Any]) -> Any:
    target = req["target"]
    bindings: dict[str, Any] = {}
    if req.get("bindings"):  # the Python file holding the functions that `kind: function` tools bind to
        module = _import_file(Path(req["bindings"]))
        bindings = {k: v for k, v in vars(module).items() if callable(v) and not k.startswith("_")}
    if target == "agent":
        from agent_framework_declarative import AgentFactory

        return AgentFactory(bindings=bindings).create_agent_from_yaml(req["yaml"])
    if target == "workflow":
        from agent_framework_declarative import AgentFactory, WorkflowFactory

        agents = {name: AgentFactory(bindings=bindings).create_agent_from_yaml(text)
                  for name, text in (req.get("agents") or {}).items()}
        return WorkflowFactory(agents=agents, bindings=bindings,
                               configuration=req.get("configuration") or {}).create_workflow_from_yaml(req["yaml"])
    module = _import_file(Path(req["code"]))
    found = getattr(module, req["attr"], None)
    if found is None:
        raise AttributeError(f"{Path(req['code']).name} has no '{req['attr']}'")
    if inspect.isfunction(found) or inspect.ismethod(found):
        return await _call(found)
    return found


async def _call(factory: Any) -> Any:
    made = factory()
    return await made if inspect.isawaitable(made) else made


class Runnables:
    """Hands each line what it runs. A workflow instance refuses concurrent runs, so a workflow from a factory (a
    Python ``create_workflow`` or a declarative file) is built afresh per line, as each line's own state; a
    module-level workflow object runs its lines one at a time. Agents are stateless per ``run`` and shared."""

    def __init__(self, req: dict[str, Any]) -> None:
        self.req = req
        self.first: Any = None
        self.factory: Any = None
        self.lock = asyncio.Lock()

    async def start(self) -> None:
        from agent_framework import Workflow

        self.first = await _build(self.req)
        if isinstance(self.first, Workflow):
            if self.req["target"] == "workflow":
                self.factory = lambda: _build(self.req)
            elif self.req["target"] == "python":
                attr = getattr(sys.modules[Path(self.req["code"]).stem], self.req["attr"])
                if inspect.isfunction(attr):
                    self.factory = lambda: _call(attr)

    async def run(self, message: Any, structured: bool) -> tuple[dict[str, Any], dict[str, int]]:
        from agent_framework import Workflow

        if not isinstance(self.first, Workflow):
            return await _invoke(self.first, message, structured)
        if self.factory is not None:
            return await _invoke(await self.factory(), message, structured)
        async with self.lock:
            return await _invoke(self.first, message, structured)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    text = getattr(value, "text", None)
    if isinstance(text, str):
        return text
    dump = getattr(value, "model_dump", None) or getattr(value, "to_dict", None)
    if callable(dump):
        try:
            return _jsonable(dump())
        except Exception:  # an object that cannot say itself as data is shown as text
            return str(value)
    return str(value)


def _fields(text: str | None, structured: bool) -> dict[str, Any]:
    """A structured output's fields, when the final text is the JSON object the schema asked for."""
    if not structured or not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {k: v for k, v in value.items() if k != "output"} if isinstance(value, dict) else {}


def _usage(details: Any) -> dict[str, int]:
    if not isinstance(details, dict):
        details = _jsonable(details) if details is not None else {}
    if not isinstance(details, dict):
        return {}
    out = {}
    for key, name in (("input_token_count", "prompt"), ("output_token_count", "completion"),
                      ("total_token_count", "total")):
        if isinstance(details.get(key), int):
            out[name] = int(details[key])
    if out and "total" not in out:
        out["total"] = out.get("prompt", 0) + out.get("completion", 0)
    return out


async def _invoke(runnable: Any, message: Any, structured: bool) -> tuple[dict[str, Any], dict[str, int]]:
    """One input through an agent (``run``) or a workflow (``run`` then its outputs)."""
    from agent_framework import Workflow

    if isinstance(runnable, Workflow):
        result = await runnable.run(message)
        outputs = [o for o in result.get_outputs()]
        last = outputs[-1] if outputs else None
        text = last if isinstance(last, str) else getattr(last, "text", None)
        tokens: dict[str, int] = {}
        for out in outputs:
            for key, value in _usage(getattr(out, "usage_details", None)).items():
                tokens[key] = tokens.get(key, 0) + value
        if text is None and last is not None:
            value = _jsonable(last)
            return ({"output": value} if not isinstance(value, dict) else {"output": json.dumps(value), **value},
                    tokens)
        return {"output": text, **_fields(text, structured)}, tokens
    response = await runnable.run(message)
    text = response.text
    return {"output": text, **_fields(text, structured)}, _usage(response.usage_details)


async def _batch(req: dict[str, Any]) -> dict[str, Any]:
    _tag_requests()
    if req.get("cwd"):
        os.chdir(req["cwd"])
    runnable = Runnables(req)
    await runnable.start()
    todo: list[tuple[int, dict[str, Any]]] = [(int(n), dict(i)) for n, i in req["todo"]]
    workers, timeout = max(1, int(req.get("workers") or 1)), float(req.get("line_timeout") or 300)
    structured, tag = bool(req.get("structured")), str(req.get("tag") or "")
    progress = Path(req["lines"])
    records: dict[int, dict[str, Any]] = {}
    gate = asyncio.Semaphore(workers)

    async def one(number: int, inputs: dict[str, Any]) -> None:
        async with gate:
            _LINE.set(f"{tag}|{number}")
            started = time.monotonic()
            record: dict[str, Any] = {"line": number, "inputs": inputs}
            try:
                outputs, tokens = await asyncio.wait_for(runnable.run(inputs.get("input"), structured), timeout)
                record.update(status="Completed", outputs=outputs, tokens=tokens, error=None, error_code=None)
            except TimeoutError:
                record.update(status="Failed", outputs=None, tokens={}, error_code="LineExecutionTimeoutError",
                              error=f"Line {number} execution timeout for exceeding {int(timeout)} seconds")
            except Exception as exc:  # one line's failure is that line's result
                record.update(status="Failed", outputs=None, tokens={}, error=f"{type(exc).__name__}: {exc}",
                              error_code=type(exc).__name__, error_detail=exception_chain(exc))
            record["duration_s"] = round(time.monotonic() - started, 3)
            records[number] = record
            with progress.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, default=str) + "\n")

    await asyncio.gather(*(one(n, i) for n, i in todo))
    return {"status": "Completed", "lines": [records[n] for n, _ in todo]}


if __name__ == "__main__":
    answer(lambda req: asyncio.run(_batch(req)))  # no teardown after: the framework's background threads
