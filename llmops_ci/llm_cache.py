"""Record and replay LLM calls: an OpenAI/Azure-OpenAI-compatible proxy on 127.0.0.1 for the length of a run.

The run's connections point at the proxy (``/u/<connection>/...``); it answers from the flow's
cassette or forwards to the real endpoint and records. The key is the connection, the path
(which carries the Azure deployment) and the canonical request body, so the same cassette works
whatever URL or key an environment uses; authorization headers and keys are never stored.
Cassettes are JSON, sorted by key, one entry per request: a changed prompt changes only its own
entries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llmops_ci import redaction
from llmops_ci.errors import UsageError
from llmops_ci.schema import as_dict
from llmops_ci.yamldoc import display_path

if TYPE_CHECKING:
    import requests

log = logging.getLogger("llmops_ci.llm_cache")
MODES = ("off", "record", "replay", "auto")
_FORWARD_HEADERS = ("authorization", "api-key", "openai-organization", "openai-project")
MAX_CASSETTE_BYTES = 500_000_000


@dataclass(frozen=True)
class CacheSettings:
    mode: str
    cassette: Path


@dataclass
class CacheStats:
    mode: str
    hits: int = 0
    misses: int = 0
    recorded: int = 0
    tokens_saved: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "hits": self.hits, "misses": self.misses, "recorded": self.recorded,
                "tokens_saved": self.tokens_saved}


def request_key(upstream: str, path: str, body: Any) -> str:
    canonical = json.dumps({"upstream": upstream, "path": path, "body": body}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


@dataclass
class Cassette:
    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirty: bool = False

    @classmethod
    def load(cls, path: Path) -> Cassette:
        """The recordings in ``path`` (none when it does not exist yet); UsageError naming the file when it is
        not a cassette. A single broken entry is dropped with a warning: that call misses and is recorded again."""
        cassette = cls(path)
        shown = display_path(path)
        if path.parent.exists() and not path.parent.is_dir():
            raise UsageError(f"{display_path(path.parent)}: llm_cache.dir is a file; point llm_cache.dir at a folder "
                             "(cassettes are written there, one per flow)")
        if not path.exists():
            return cassette
        if not path.is_file():
            raise UsageError(f"{shown}: a cassette must be a regular file; remove what is there and record again")
        if path.stat().st_size > MAX_CASSETTE_BYTES:
            raise UsageError(f"{shown}: over {MAX_CASSETTE_BYTES:,} bytes, too large for a cassette; delete it and "
                             "record again")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{shown}: cannot read the cassette ({exc}); delete it and record again") from None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            hint = ("it has merge-conflict markers (<<<<<<<): keep one side of each conflict, or delete the file "
                    "and record again with --llm-cache record" if "\n<<<<<<< " in f"\n{text}" else
                    "delete it and record again with --llm-cache record")
            raise UsageError(f"{shown}: not a readable cassette ({exc}); {hint}") from None
        if not isinstance(data, dict) or not isinstance(data.get("entries", []), list):
            raise UsageError(f"{shown}: not a cassette (an object with a list of 'entries'); delete it and record "
                             "again with --llm-cache record")
        for i, entry in enumerate(data.get("entries", []), 1):
            problem = _entry_problem(entry)
            if problem:
                log.warning("%s: entry %d ignored (%s); that call will be recorded again", shown, i, problem)
                cassette.dirty = True  # the next save drops it
                continue
            cassette.entries[entry["key"]] = entry
        return cassette

    def put(self, entry: dict[str, Any]) -> None:
        self.entries[entry["key"]] = entry
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        ordered = sorted(self.entries.values(), key=lambda e: (e["upstream"], e["path"], e["key"]))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # an answer can echo what the request carried (its Authorization header, a key in a URL)
        data = redaction.redact_data({"version": 1, "entries": ordered})
        text = json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.dirty = False


def _entry_problem(entry: Any) -> str | None:
    """Why a recorded entry cannot be replayed, or None."""
    if not isinstance(entry, dict):
        return "not an object"
    for name in ("key", "upstream", "path"):
        if not isinstance(entry.get(name), str):
            return f"no '{name}'"
    response = entry.get("response")
    if not isinstance(response, dict):
        return "no 'response'"
    status = response.get("status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        return "its status is not an HTTP status code"
    if "stream" in response:
        if not isinstance(response["stream"], list) or not all(isinstance(c, str) for c in response["stream"]):
            return "its stream is not a list of text chunks"
    elif not isinstance(response.get("body"), dict):
        return "its body is not a JSON object (the endpoint answered something that is not JSON)"
    elif status == 200 and set(response["body"]) == {"error"}:
        return "it recorded an error as a success"
    return None


def _usage_total(response: dict[str, Any]) -> int:
    if "body" in response:
        return _int(as_dict(as_dict(response["body"]).get("usage")).get("total_tokens"))
    total = 0
    for chunk in response.get("stream", []):
        try:
            total = _int(as_dict(as_dict(json.loads(chunk)).get("usage")).get("total_tokens")) or total
        except (ValueError, RecursionError):
            continue
    return total


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class LlmProxy:
    """Use as a context manager around a run; ``url_for(name)`` is the base URL for connection ``name``."""

    def __init__(self, settings: CacheSettings, upstreams: dict[str, str | None],
                 session: requests.Session | None = None) -> None:
        self.settings = settings
        self.upstreams = upstreams
        import requests

        self.session = session or requests.Session()
        self.cassette = Cassette.load(settings.cassette)
        self.stats = CacheStats(settings.mode)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> LlmProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                proxy.handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            self.cassette.save()

    def url_for(self, name: str) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/u/{name}"

    # -- one request -------------------------------------------------------------------------------------
    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        route, _, query = handler.path.partition("?")
        parts = route.split("/", 3)
        if len(parts) < 4 or parts[1] != "u" or parts[2] not in self.upstreams:
            return self._json(handler, 404, _error(f"llmops-ci proxy: unknown route {route}"))
        name, path = parts[2], "/" + parts[3]
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._json(handler, 400, _error("llmops-ci proxy: the request body is not JSON"))
        key = request_key(name, path, body)
        with self._lock:
            entry = self.cassette.entries.get(key) if self.settings.mode in ("replay", "auto") else None
            if entry is not None:
                self.stats.hits += 1
                self.stats.tokens_saved += _usage_total(entry["response"])
        if entry is not None:
            return self._replay(handler, entry["response"])
        if self.settings.mode == "replay":
            with self._lock:
                self.stats.misses += 1
            return self._json(handler, 400, _error(
                f"llmops-ci replay: no recording of this call to connection '{name}' ({path}) in "
                f"{self.settings.cassette}; the prompt or inputs changed since it was recorded. Record it with "
                "--llm-cache record (or auto) and the endpoint's URL and key set", "llm_cache_miss"))
        with self._lock:
            self.stats.misses += 1
        upstream = self.upstreams.get(name)
        if not upstream:
            return self._json(handler, 502, _error(
                f"llmops-ci cache: no recording of this call to '{name}' ({path}) and no endpoint to record it from; "
                "set the connection's URL and key (see llmops.yaml) and run again", "llm_cache_miss"))
        self._forward(handler, name, upstream, path, query, body, key)

    def _forward(self, handler: BaseHTTPRequestHandler, name: str, upstream: str, path: str, query: str,
                 body: Any, key: str) -> None:
        headers = {k: v for k, v in handler.headers.items() if k.lower() in _FORWARD_HEADERS}
        url = upstream.rstrip("/") + path + (f"?{query}" if query else "")
        import requests

        stream = isinstance(body, dict) and bool(body.get("stream"))
        try:
            response = self.session.post(url, json=body, headers=headers, stream=stream, timeout=600)
        except requests.RequestException as exc:
            return self._json(handler, 502, _error(f"llmops-ci cache: cannot reach {name}: {type(exc).__name__}"))
        if not stream or response.status_code != 200:
            try:
                payload = response.json()
            except ValueError:
                payload = None
            if not isinstance(payload, dict):  # never record (or hand on as a success) what is not a JSON answer
                return self._json(handler, 502 if response.status_code == 200 else response.status_code, _error(
                    f"llmops-ci cache: {name} answered HTTP {response.status_code} with a body that is not a JSON "
                    f"object: {response.text[:300]}"))
            if response.status_code == 200:
                self._record(key, name, path, body, {"status": 200, "body": payload})
            return self._json(handler, response.status_code, payload)
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        chunks = []
        for line in response.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:"):
                continue
            data = line[5:].strip()
            chunks.append(data)
            handler.wfile.write(f"data: {data}\n\n".encode())
            handler.wfile.flush()
        handler.close_connection = True
        self._record(key, name, path, body, {"status": 200, "stream": chunks})

    def _record(self, key: str, name: str, path: str, body: Any, response: dict[str, Any]) -> None:
        if self.settings.mode == "off":
            return
        with self._lock:
            self.cassette.put({"key": key, "upstream": name, "path": path, "request": body, "response": response})
            self.stats.recorded += 1

    def _replay(self, handler: BaseHTTPRequestHandler, response: dict[str, Any]) -> None:
        if "stream" not in response:
            return self._json(handler, int(response.get("status", 200)), response.get("body"))
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        for chunk in response["stream"]:
            handler.wfile.write(f"data: {chunk}\n\n".encode())
        handler.wfile.flush()
        handler.close_connection = True

    @staticmethod
    def _json(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


def _error(message: str, code: str = "llmops_ci_proxy") -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}
