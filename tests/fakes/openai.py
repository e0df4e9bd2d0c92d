"""An OpenAI-compatible chat completions server on 127.0.0.1 for tests and benchmarks (stdlib only).

Serves ``POST /v1/chat/completions`` and the Azure form
``/openai/deployments/<deployment>/chat/completions?api-version=...``, plain or streamed (SSE),
with a ``usage`` block. Behaviour is driven by the prompt so a data line can choose its fate:
"FAIL" answers 400 (the line fails at once), "SLOW" sleeps ``slow_seconds``. The reply is the
``answer`` callable's result (default: echo of the last prompt line). ``fault`` makes every call fail
the way a dying endpoint does: "500", "429" (with ``Retry-After: 3600``), "truncate" (a 200 whose body
stops short) or "slow" (sleeps ``slow_seconds`` first).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _prompt(body: dict[str, Any]) -> str:
    parts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text", "") for p in content if isinstance(p, dict)]
    return "\n".join(parts)


def echo(prompt: str) -> str:
    lines = prompt.strip().splitlines()
    return f"ECHO: {lines[-1][:80]}" if lines else "ECHO:"


@dataclass
class FakeOpenAI:
    latency: float = 0.0
    slow_seconds: float = 5.0
    answer: Callable[[str], str] = echo
    requests: list[dict[str, Any]] = field(default_factory=list)
    fault: str | None = None
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body in one segment with TCP_NODELAY (apart, each call waits ~40 ms for a delayed ACK)
            disable_nagle_algorithm = True
            wbufsize = 1 << 16

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                fake.handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @staticmethod
    def _json(handler: BaseHTTPRequestHandler, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?")[0]
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length) or b"{}")
        key = handler.headers.get("api-key") or (handler.headers.get("Authorization") or "").removeprefix("Bearer ")
        self.requests.append({"path": handler.path, "body": body, "authorization": bool(key), "api_key": key})
        if not path.endswith("/chat/completions"):
            return self._json(handler, 404, {"error": {"message": f"unknown path {path}"}})
        prompt = _prompt(body)
        time.sleep(self.latency)
        if self.fault == "500":
            return self._json(handler, 500, {"error": {"message": "fake outage", "type": "server_error"}})
        if self.fault == "429":
            return self._json(handler, 429, {"error": {"message": "fake rate limit", "type": "rate_limit"}},
                              {"Retry-After": "3600"})
        if self.fault == "truncate":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", "4096")
            handler.end_headers()
            handler.wfile.write(b'{"id": "chatcmpl-cut", "choi')
            handler.wfile.flush()
            handler.close_connection = True
            return None
        if self.fault == "slow":
            time.sleep(self.slow_seconds)
        if "FAIL" in prompt:
            return self._json(handler, 400, {"error": {"message": "fake failure (FAIL in prompt)",
                                                       "type": "invalid_request_error"}})
        if "SLOW" in prompt:
            time.sleep(self.slow_seconds)
        text = self.answer(prompt)
        prompt_tokens, completion_tokens = max(1, len(prompt.split())), max(1, len(text.split()))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        model = body.get("model") or path.split("/deployments/")[-1].split("/")[0]
        cid, created = "chatcmpl-" + uuid.uuid4().hex[:12], int(time.time())
        if not body.get("stream"):
            return self._json(handler, 200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": usage,
            })
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.flush()
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any] | None, finish: str | None = None, use: Any = None) -> None:
            obj: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                   "choices": [] if delta is None else
                                   [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if include_usage:
                obj["usage"] = use
            handler.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            handler.wfile.flush()

        chunk({"role": "assistant", "content": ""})
        for word in text.split(" "):
            chunk({"content": word + " "})
        chunk({}, finish="stop")
        if include_usage:
            chunk(None, use=usage)
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()
        handler.close_connection = True
