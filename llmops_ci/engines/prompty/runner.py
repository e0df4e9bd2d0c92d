"""Runs a ``.prompty`` file in the prompty 2.x format over many lines in this process, several at a time.

The ``prompty`` package has no batch runner: ``prompty.invoke`` is one call. Lines here run on a
thread pool (the work is waiting on HTTP), each through ``prompty.prepare`` and ``prompty.run`` so
the raw response's token usage is kept; a line that fails is recorded, never raised. Connections
named in the file as ``kind: reference`` are llmops.yaml connections, registered with
``prompty.register_connection`` as OpenAI clients; ``kind: key`` connections read ``${env:...}``
from this process's environment when the file is loaded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from llmops_ci.core.errors import UsageError
from llmops_ci.core.service_errors import exception_chain, service_failure
from llmops_ci.core.yamldoc import display_path
from llmops_ci.engines.artifacts import LineResult

COMPLETED: Final = "Completed"
FAILED: Final = "Failed"


@dataclass(frozen=True)
class Connection:
    """An llmops.yaml connection as the runner needs it (``values`` holds secrets: never printed)."""

    name: str
    type: str  # open_ai | azure_open_ai
    values: Mapping[str, Any] = field(repr=False)


@dataclass
class PromptyRun:
    lines: list[LineResult]
    duration_s: float

    @property
    def lines_failed(self) -> int:
        return sum(line.status != COMPLETED for line in self.lines)

    @property
    def tokens(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for line in self.lines:
            for key, value in line.tokens.items():
                total[key] = total.get(key, 0) + value
        return total


def load_agent(path: Path, connections: Iterable[Connection] = (), *, timeout_s: float = 300.0,
               max_retries: int = 2, key_endpoint: Callable[[str | None], str] | None = None) -> Any:
    """The file loaded by ``prompty.load``, with the llmops.yaml connections it references registered.

    ``key_endpoint``: where the calls of a ``kind: key`` connection go instead of the file's endpoint (given the
    endpoint the file resolves to): the record/replay proxy.
    """
    import prompty
    from prompty.model import ApiKeyConnection, ReferenceConnection

    shown = display_path(path)
    try:
        agent = prompty.load(path)
    except FileNotFoundError as exc:
        raise UsageError(f"{shown}: {exc}") from None
    except (ValueError, TypeError) as exc:  # PromptyLoadError is a ValueError
        raise UsageError(f"{shown}: the prompty package cannot load this file: {exc}; run 'llmops-ci lint' "
                         "on it") from None
    model = agent.model
    conn = model.connection if model is not None else None
    if isinstance(conn, ReferenceConnection):
        known = {c.name: c for c in connections}
        if conn.name not in known:
            raise UsageError(f"{shown}: model.connection references '{conn.name}', which is not declared under "
                             "'connections:' in llmops.yaml; declare it (type open_ai or azure_open_ai)")
        # registered per endpoint: runs side by side may route the same connection name to different places
        chosen = known[conn.name]
        unique = f"llmops-ci:{conn.name}:{chosen.values.get('base_url') or chosen.values.get('api_base')}"
        prompty.register_connection(unique, client=_client(chosen, timeout_s, max_retries))
        if model is not None:
            model.connection = ReferenceConnection(name=unique)
    elif model is not None and isinstance(conn, ApiKeyConnection) and model.provider != "openai" and key_endpoint:
        raise UsageError(f"{shown}: a 'kind: key' connection of provider '{model.provider}' cannot go through "
                         "llmops-ci's LLM proxy (record/replay and token counts); name an llmops.yaml connection "
                         "instead: connection: {kind: reference, name: <connection>}")
    elif model is not None and isinstance(conn, ApiKeyConnection) and model.provider == "openai":
        # the executor builds a client per call (~25 ms of CPU under the GIL); one shared client, same settings
        from openai import OpenAI, OpenAIError

        base_url = conn.endpoint or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        api_key = conn.api_key or None
        if key_endpoint is not None:
            base_url = key_endpoint(conn.endpoint or os.environ.get("OPENAI_BASE_URL") or None)
            api_key = api_key or "llmops-ci-replay"  # the client insists on one; a replay needs none
        name = f"llmops-ci:{path.resolve()}:{base_url}"
        agent_header = f"prompty/{prompty.VERSION}"
        try:
            client = OpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s,
                            max_retries=max_retries,
                            default_headers={"User-Agent": agent_header, "x-ms-useragent": agent_header})
        except OpenAIError:
            return agent  # no key anywhere: each line fails with the executor's own message
        prompty.register_connection(name, client=client)
        model.connection = ReferenceConnection(name=name)
    return agent


def _client(conn: Connection, timeout_s: float, max_retries: int) -> Any:
    from openai import AzureOpenAI, OpenAI

    values = conn.values
    if conn.type == "azure_open_ai":
        endpoint = values.get("api_base")
        if not isinstance(endpoint, str) or not endpoint:
            raise UsageError(f"connection '{conn.name}' has no api_base; set it in llmops.yaml")
        return AzureOpenAI(api_key=values.get("api_key"), azure_endpoint=endpoint,
                           api_version=values.get("api_version"), timeout=timeout_s, max_retries=max_retries)
    if conn.type == "open_ai":
        return OpenAI(api_key=values.get("api_key"), base_url=values.get("base_url"),
                      organization=values.get("organization"), timeout=timeout_s, max_retries=max_retries)
    raise UsageError(f"connection '{conn.name}' has type '{conn.type}'; a prompty 2.x file can use open_ai or "
                     "azure_open_ai connections")



def _usage(response: Any) -> dict[str, int]:
    usage = getattr(response, "usage", None)
    out = {}
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = getattr(usage, key, None)
        if isinstance(value, int):
            out[key] = value
    return out


def _outputs(result: Any) -> dict[str, Any]:
    if isinstance(result, dict):
        return result
    if isinstance(result, (str, int, float, bool, list)) or result is None:
        return {"output": result}
    return {"output": str(result)}


def run_line(agent: Any, index: int, inputs: Mapping[str, Any]) -> LineResult:
    """One line: render, call, process. Any failure is the line's result, with the exception's type as code."""
    import prompty

    start = time.perf_counter()
    tokens: dict[str, int] = {}
    try:
        messages = prompty.prepare(agent, dict(inputs))
        response = prompty.run(agent, messages, raw=True)
        tokens = _usage(response)
        result = prompty.process(agent, response)
    except Exception as exc:  # a line's failure, whatever it is, belongs to that line
        return LineResult(index, FAILED, dict(inputs), None, time.perf_counter() - start, tokens,
                          error=f"{type(exc).__name__}: {exc}", error_code=type(exc).__name__,
                          service_failure=service_failure(exception_chain(exc)))
    return LineResult(index, COMPLETED, dict(inputs), _outputs(result), time.perf_counter() - start, tokens)


def run_lines(path: Path, rows: Sequence[Mapping[str, Any]], *, workers: int = 4,
              connections: Iterable[Connection] = (), timeout_s: float = 300.0, max_retries: int = 2) -> PromptyRun:
    """Every row through the file, ``workers`` at a time; results in row order."""
    if workers < 1:
        raise UsageError(f"workers must be at least 1, not {workers}")
    start = time.perf_counter()
    agent = load_agent(path, connections, timeout_s=timeout_s, max_retries=max_retries)
    pool = ThreadPoolExecutor(max_workers=min(workers, max(1, len(rows))), thread_name_prefix="prompty")
    try:
        lines = list(pool.map(lambda item: run_line(agent, item[0], item[1]), enumerate(rows)))
    except BaseException:  # Ctrl-C: lines not started are dropped, not run
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return PromptyRun(lines, time.perf_counter() - start)
