"""Record and replay LLM calls: an OpenAI/Azure-OpenAI-compatible proxy on 127.0.0.1 for the length of a run.

The run's connections point at the proxy (``/u/<connection>/...``); it answers from the flow's
cassette or forwards to the real endpoint and records. The key is the connection, the path
(which carries the Azure deployment) and the canonical request body, so the same cassette works
whatever URL or key an environment uses; authorization headers and keys are never stored.
Cassettes are JSON, sorted by key, one entry per request: a changed prompt changes only its own
entries.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llmops_ci.core.schema import as_dict
from llmops_ci.core.service_errors import classify_exception
from llmops_ci.llm.cassette import (
    CacheSettings,
    CacheStats,
    Cassette,
    LineUsage,
    request_key,
    usage_of,
    usage_total,
)

if TYPE_CHECKING:
    import requests

log = logging.getLogger("llmops_ci.llm_cache")
_FORWARD_HEADERS = ("authorization", "api-key", "openai-organization", "openai-project")

# The header the warm executor puts on every request a line makes: "<run tag>|<line number>".
LINE_HEADER = "X-Llmops-Line"


CONNECT_TIMEOUT_S = 10
# consecutive failed calls (5xx, 429, timeouts, broken answers) after which an endpoint counts as down
FAILURES_BEFORE_DOWN = 5
# how often the server loop looks for ``stop()``: the default 0.5 s made every step's end wait up to half a second
STOP_POLL_S = 0.05


class Health:
    """Whether an endpoint is plainly down: then every further call fails at once instead of being retried
    (prompt flow's LLM tool retries 5xx and 429 up to 100 times, honouring any Retry-After)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures = 0
        self.down: str | None = None
        self.kind: str | None = None  # the outside-service failure class that took it down (service_errors)
        self._lock = threading.Lock()

    def failed(self, reason: str, *, plainly_down: bool = False, kind: str | None = None) -> None:
        with self._lock:
            self.failures += 1
            if self.down is None and (plainly_down or self.failures >= FAILURES_BEFORE_DOWN):
                self.kind = kind
                self.down = reason if plainly_down else f"{self.failures} calls in a row failed, the last with {reason}"
                log.error("LLM endpoint of '%s' is down (%s): its remaining calls fail at once", self.name, self.down)

    def answered(self) -> None:
        with self._lock:
            self.failures = 0


class LlmRun:
    """One run's view of the proxy: its cassette, its counters and the tokens of each of its lines."""

    def __init__(self, server: ProxyServer, tag: str, settings: CacheSettings,
                 upstreams: dict[str, str | None], call_timeout: float = 600) -> None:
        self.server, self.tag, self.settings, self.upstreams = server, tag, settings, upstreams
        self.call_timeout = call_timeout
        # off: pass-through, only counting tokens; nothing is read or written
        self.cassette = Cassette.load(settings.cassette) if settings.mode != "off" else Cassette(settings.cassette)
        self.stats = CacheStats(settings.mode, recorded_in_change=0 if settings.provenance is not None else None)
        self.usage: dict[int | None, LineUsage] = {}
        self.failures: dict[int | None, str] = {}  # line -> how its call to the endpoint failed, as seen here
        self.repeat_calls: dict[str, int] = {}  # with repeats, untagged: how often each call was made
        self.lock = threading.Lock()

    def url_for(self, name: str) -> str:
        return f"{self.server.url}/r/{self.tag}/u/{name}"

    def shared_url(self, name: str) -> str:
        """The same for every run: the run comes from the line header of each call (``ProxyServer._route``)."""
        return f"{self.server.url}/c/{name}"

    def count(self, line: int | None, response: dict[str, Any]) -> None:
        with self.lock:
            self.usage.setdefault(line, LineUsage()).add(usage_of(response))

    def down(self) -> str | None:
        """Why an endpoint of this run is down (see ``Health``), or None."""
        for name, url in self.upstreams.items():
            health = self.server.health.get(url) if url else None
            if health is not None and health.down:
                return f"{name}: {health.down}"
        return None

    def tokens(self, line: int) -> dict[str, int] | None:
        found = self.usage.get(line)
        return found.to_json() if found else None

    def failed(self, line: int | None, kind: str | None) -> None:
        """The endpoint failed this line's call: the client behind the proxy sees only a reset or a 5xx, so the
        real cause (refused, DNS, TLS, timeout, server error) is kept here for the line's record."""
        if kind:
            with self.lock:
                self.failures[line] = kind

    def failure(self, line: int) -> str | None:
        return self.failures.get(line)

    def close(self) -> None:
        self.server.runs.pop(self.tag, None)
        with self.lock:
            if self.settings.mode != "off":
                self.cassette.save()


class ProxyServer:
    """The HTTP server on 127.0.0.1 behind every run of a step; runs register with ``open_run``.

    Routes: ``/r/<tag>/u/<connection>/...`` for a run's connections, ``/c/<connection>/...`` for connections
    stored by name for every run (the run comes from the line header), ``/e/<route>/...`` for endpoints that
    flows read from the environment (one value for the whole process, so the run comes from the line header, or
    is the only run open).
    """

    def __init__(self, session: requests.Session | None = None, env_upstreams: dict[str, str] | None = None) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=8, pool_maxsize=64)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session
        self.env_upstreams = dict(env_upstreams or {})
        self.runs: dict[str, LlmRun] = {}
        self.health: dict[str, Health] = {}
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env_url(self, route: str) -> str:
        return f"{self.url}/e/{route}"

    def open_run(self, tag: str, settings: CacheSettings, upstreams: dict[str, str | None],
                 call_timeout: float = 600) -> LlmRun:
        """``call_timeout``: the longest one upstream call may take (a run passes its line timeout)."""
        run = LlmRun(self, tag, settings, {**upstreams, **self.env_upstreams}, call_timeout)
        self.runs[tag] = run
        return run

    def start(self) -> ProxyServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body leave in one segment with TCP_NODELAY: written apart, they wait ~40 ms for a
            # delayed ACK on a kept-alive connection
            disable_nagle_algorithm = True
            wbufsize = 1 << 16

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                server.handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": STOP_POLL_S}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for run in list(self.runs.values()):
            run.close()

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _route(self, handler: BaseHTTPRequestHandler) -> tuple[LlmRun, str, int | None, str] | str:
        """(run, connection or env route, line, rest of the path), or why the request has no run."""
        route = handler.path.partition("?")[0]
        tag, _, line_text = str(handler.headers.get(LINE_HEADER) or "").partition("|")
        line = int(line_text) if line_text.isdigit() else None
        parts = route.split("/", 5)
        if len(parts) >= 6 and parts[1] == "r" and parts[3] == "u":
            run = self.runs.get(parts[2])
            if run is None or parts[4] not in run.upstreams:
                return f"unknown route {route}"
            return run, parts[4], line if tag == run.tag else None, "/" + parts[5]
        parts = route.split("/", 3)
        if len(parts) >= 4 and parts[1] == "c":
            # a connection stored by name for every run (flex model configurations, prompty files): the run is the
            # one whose line makes the call, never whichever run last stored the connection
            run = self.runs.get(tag) or (next(iter(self.runs.values())) if not tag and len(self.runs) == 1 else None)
            if run is None:
                return (f"a call to connection '{parts[2]}' from outside a run's line while {len(self.runs)} runs are "
                        "open (a client other than httpx or requests, which the executor cannot tag); run the flows "
                        "one at a time (--flow)")
            if parts[2] not in run.upstreams:
                return f"unknown connection '{parts[2]}' for run {run.tag}"
            return run, parts[2], line if tag == run.tag else None, "/" + parts[3]
        if len(parts) >= 4 and parts[1] == "e" and parts[2] in self.env_upstreams:
            run = self.runs.get(tag) or (next(iter(self.runs.values())) if len(self.runs) == 1 else None)
            if run is None:
                return (f"a call to {parts[2]} from outside a run's line while {len(self.runs)} runs are open; "
                        "make the call from the flow's code, or run the flows one at a time (--workers 1)")
            return run, parts[2], line if tag == run.tag else None, "/" + parts[3]
        return f"unknown route {route}"

    # -- one request -------------------------------------------------------------------------------------
    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        routed = self._route(handler)
        if isinstance(routed, str):
            return _send_json(handler, 404, _error(f"llmops-ci proxy: {routed}"))
        run, name, line, path = routed
        query = handler.path.partition("?")[2]
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return _send_json(handler, 400, _error("llmops-ci proxy: the request body is not JSON"))
        key = request_key(name, path, body)
        repeats = run.settings.repeats
        if repeats > 1:  # repeat i of a line replays repeat i's answer, not repeat 0's
            position = line
            if position is None:  # an engine that does not tag its lines: the n-th identical call is repeat n mod k
                with run.lock:
                    position = run.repeat_calls[key] = run.repeat_calls.get(key, -1) + 1
            key = f"{key}#{position % repeats}" if position % repeats else key
        mode = run.settings.mode
        with run.lock:
            entry = run.cassette.entries.get(key) if mode in ("replay", "auto") else None
            prov = run.settings.provenance
            if entry is not None and prov is not None and prov.base_only and key not in prov.same:
                entry = None  # recorded (or altered) by this change: not an answer the base branch vouches for
            if entry is not None:
                run.stats.hits += 1
                run.stats.tokens_saved += usage_total(entry["response"])
                if prov is not None and key in prov.changed:
                    run.stats.recorded_in_change = (run.stats.recorded_in_change or 0) + 1
            elif mode != "off":
                run.stats.misses += 1
        if entry is not None:
            run.count(line, entry["response"])
            return _replay(handler, entry["response"], asks_usage(body))
        if mode == "replay":
            return _send_json(handler, 400, _error(
                f"llmops-ci replay: no recording of this call to connection '{name}' ({path}) in "
                f"{run.settings.cassette}; the prompt or inputs changed since it was recorded. Record it with "
                "--llm-cache record (or auto) and the endpoint's URL and key set", "llm_cache_miss"))
        upstream = run.upstreams.get(name)
        if not upstream:
            return _send_json(handler, 502, _error(
                f"llmops-ci cache: no recording of this call to '{name}' ({path}) and no endpoint to record it from; "
                "set the connection's URL and key (see llmops.yaml) and run again", "llm_cache_miss"))
        self._forward(handler, run, line, name, upstream, path, query, body, key)

    def _forward(self, handler: BaseHTTPRequestHandler, run: LlmRun, line: int | None, name: str, upstream: str,
                 path: str, query: str, body: Any, key: str) -> None:
        headers = {k: v for k, v in handler.headers.items() if k.lower() in _FORWARD_HEADERS}
        url = upstream.rstrip("/") + path + (f"?{query}" if query else "")
        import requests

        stream = isinstance(body, dict) and bool(body.get("stream"))
        asked = asks_usage(body)
        health = self.health.setdefault(upstream, Health(name))
        if health.down:
            run.failed(line, health.kind)
            return _reset(handler)
        try:
            # a streamed answer carries its token counts only when asked for: ask, and keep them from the client
            response = self.session.post(url, json=body if asked or not stream else with_usage(body), headers=headers,
                                         stream=stream, timeout=(CONNECT_TIMEOUT_S, run.call_timeout))
            if stream and not asked and response.status_code == 400 and "stream_options" in response.text:
                # an endpoint (an older Azure api-version) that does not take stream_options: as the client sent it
                response = self.session.post(url, json=body, headers=headers, stream=stream,
                                             timeout=(CONNECT_TIMEOUT_S, run.call_timeout))
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:  # the latter: no subclass
            if not isinstance(exc, (requests.ReadTimeout, requests.exceptions.ChunkedEncodingError)):
                kind = classify_exception(exc) or "cannot connect"
                health.failed(f"{kind}: cannot reach {upstream}: {type(exc).__name__}", plainly_down=True, kind=kind)
                run.failed(line, kind)
                return _reset(handler)  # what the client would see without the proxy: no connection
            health.failed(f"a broken answer ({type(exc).__name__})", kind="cannot connect")
            run.failed(line, "cannot connect")
            return _send_json(handler, 502, _error(f"llmops-ci cache: {name} broke off its answer"))
        except requests.Timeout:
            health.failed(f"no answer within {run.call_timeout:g} s", kind="timeout")
            run.failed(line, "timeout")
            return _send_json(handler, 504, _error(f"llmops-ci cache: {name} did not answer within "
                                                   f"{run.call_timeout:g} s"))
        except requests.RequestException as exc:
            health.failed(f"{type(exc).__name__}")
            return _send_json(handler, 502, _error(f"llmops-ci cache: cannot reach {name}: {type(exc).__name__}"))
        if not stream or response.status_code != 200:
            try:
                payload = response.json()
            except (ValueError, requests.RequestException):
                payload = None
            if response.status_code == 200 and isinstance(payload, dict):
                health.answered()
                self._record(run, line, key, name, path, body, {"status": 200, "body": payload})
                return _send_json(handler, 200, payload)
            if response.status_code == 200:
                health.failed("a truncated or non-JSON answer", kind="cannot connect")
                run.failed(line, "cannot connect")
                return _send_json(handler, 502, _error(f"llmops-ci cache: {name} answered 200 with a truncated body "
                                                       "or one that is not a JSON object; nothing was recorded"))
            if response.status_code >= 500 or response.status_code == 429:
                # not passed on: Retry-After (hours, at times) would hold the line; the client backs off itself
                health.failed(f"HTTP {response.status_code}", kind="server error after retries")
                run.failed(line, "server error after retries")
            else:
                health.answered()
            return _send_json(handler, response.status_code,
                              payload if payload is not None else _error(response.text[:500]))
        health.answered()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        chunks = []
        for raw_line in response.iter_lines(decode_unicode=True):
            if not raw_line or not raw_line.startswith("data:"):
                continue
            data = raw_line[5:].strip()
            chunks.append(data)
            shown = client_chunk(data, asked)
            if shown is not None:
                handler.wfile.write(f"data: {shown}\n\n".encode())
                handler.wfile.flush()
        handler.close_connection = True
        self._record(run, line, key, name, path, body, {"status": 200, "stream": chunks})

    @staticmethod
    def _record(run: LlmRun, line: int | None, key: str, name: str, path: str, body: Any,
                response: dict[str, Any]) -> None:
        run.count(line, response)
        if run.settings.mode == "off":
            return
        with run.lock:
            run.cassette.put({"key": key, "upstream": name, "path": path, "request": body, "response": response})
            run.stats.recorded += 1


class LlmProxy:
    """A proxy server with a single run: ``url_for(name)`` is the base URL for connection ``name``."""

    def __init__(self, settings: CacheSettings, upstreams: dict[str, str | None],
                 session: requests.Session | None = None) -> None:
        self.server = ProxyServer(session)
        self.settings, self.upstreams = settings, upstreams
        self.run: LlmRun | None = None

    @property
    def stats(self) -> CacheStats:
        assert self.run is not None
        return self.run.stats

    def __enter__(self) -> LlmProxy:
        self.server.start()
        self.run = self.server.open_run("run", self.settings, self.upstreams)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.server.stop()

    def url_for(self, name: str) -> str:
        assert self.run is not None
        return self.run.url_for(name)


def asks_usage(body: Any) -> bool:
    return isinstance(body, dict) and bool(as_dict(body.get("stream_options")).get("include_usage"))


def with_usage(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "stream_options": {**as_dict(body.get("stream_options")), "include_usage": True}}


def client_chunk(data: str, asked: bool) -> str | None:
    """A streamed chunk as the client would have had it without the proxy asking for usage: the usage-only last
    chunk left out (None), the ``usage`` field of the others removed. The cassette keeps them whole."""
    if asked or not data.startswith("{"):
        return data
    try:
        chunk = json.loads(data)
    except (ValueError, RecursionError):
        return data
    if not isinstance(chunk, dict) or "usage" not in chunk:
        return data
    if not chunk.get("choices"):
        return None
    chunk.pop("usage")
    return json.dumps(chunk, ensure_ascii=False)


def _replay(handler: BaseHTTPRequestHandler, response: dict[str, Any], asked: bool = True) -> None:
    if "stream" not in response:
        return _send_json(handler, int(response.get("status", 200)), response.get("body"))
    shown = [c for c in (client_chunk(chunk, asked) for chunk in response["stream"]) if c is not None]
    data = b"".join(f"data: {chunk}\n\n".encode() for chunk in shown)
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(data)
    handler.wfile.flush()
    handler.close_connection = True


def _reset(handler: BaseHTTPRequestHandler) -> None:
    """Drop the client's connection with a reset and no answer, as a dead endpoint does; an orderly close would
    read as "server disconnected", which the client retries."""
    conn = handler.connection
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.close_connection = True
    os.close(conn.detach())


def _send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    """The handler's buffered ``wfile`` sends headers and body in one segment (see ``Handler.wbufsize``)."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
    handler.wfile.flush()


def _error(message: str, code: str = "llmops_ci_proxy") -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}
