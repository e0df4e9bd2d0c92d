"""Child process serving a registered Agent Framework agent or workflow on 127.0.0.1 (started by ``maf_release``).

Routes: ``GET /health``; ``POST /v1/responses`` in the OpenAI Responses shape (``{"input": "..."}`` or a list of
messages, answered with ``output`` message items, ``output_text`` and ``usage``); ``POST /score`` with the flow's
inputs (``{"input": "..."}``), answered with the same outputs a batch run records (what smoke tests check). The
request on stdin is the runner's (``maf_runner``) plus ``port``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llmops_ci.engines.agent_framework.runner import Runnables


def _message(body: Any) -> Any:
    """The user message of a Responses request: ``input`` as text, or the last user item's text."""
    value = body.get("input") if isinstance(body, dict) else None
    if isinstance(value, list):
        for item in reversed(value):
            if isinstance(item, dict) and item.get("role", "user") == "user":
                content = item.get("content")
                if isinstance(content, list):
                    return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
                return content
    return value


def responses_body(outputs: dict[str, Any], tokens: dict[str, int], model: str) -> dict[str, Any]:
    text = outputs.get("output")
    text = text if isinstance(text, str) else json.dumps(text)
    return {"id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
            "status": "completed", "model": model,
            "output": [{"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "output_text": text,
            "usage": {"input_tokens": tokens.get("prompt", 0), "output_tokens": tokens.get("completion", 0),
                      "total_tokens": tokens.get("total", 0)}}


def main() -> int:
    req = json.loads(sys.stdin.read())
    if req.get("cwd"):
        os.chdir(req["cwd"])
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    runnable = Runnables(req)
    asyncio.run_coroutine_threadsafe(runnable.start(), loop).result()
    structured, model = bool(req.get("structured")), str(req.get("model_name") or "agent")

    def answer(message: Any) -> tuple[dict[str, Any], dict[str, int]]:
        return asyncio.run_coroutine_threadsafe(runnable.run(message, structured), loop).result(
            timeout=float(req.get("line_timeout") or 300))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.partition("?")[0] == "/health":
                return self._send(200, {"status": "Healthy"})
            return self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            route = self.path.partition("?")[0]
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            except ValueError:
                return self._send(400, {"error": {"message": "the request body is not JSON"}})
            if route not in ("/score", "/v1/responses", "/responses"):
                return self._send(404, {"error": {"message": f"no route {route}; POST /v1/responses or /score"}})
            message = _message(body) if route != "/score" else (body.get("input") if isinstance(body, dict) else None)
            if message is None:
                return self._send(400, {"error": {"message": "the request has no input"}})
            try:
                outputs, tokens = answer(message)
            except Exception as exc:  # the agent's failure is this request's answer
                return self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}"}})
            return self._send(200, outputs if route == "/score" else responses_body(outputs, tokens, model))

    server = ThreadingHTTPServer(("127.0.0.1", int(req["port"])), Handler)
    server.daemon_threads = True
    print(f"serving on http://127.0.0.1:{req['port']}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
