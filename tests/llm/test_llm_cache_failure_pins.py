"""An endpoint failing in each way the proxy tells apart, as the client, the line's record and ``run.down()`` see
it; SSE as endpoints really write it; routes that must not be confused."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from llmops_ci.llm.cache import FAILURES_BEFORE_DOWN, LINE_HEADER, ProxyServer
from llmops_ci.llm.cassette import CacheSettings
from tests.fakes.openai import FakeOpenAI

PATH = "/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}


class _Scripted(FakeOpenAI):
    """An endpoint whose answer is written by the test (``reply(handler, body)``)."""

    def __init__(self, reply: Callable[[BaseHTTPRequestHandler, dict[str, Any]], None], **kw: Any) -> None:
        super().__init__(**kw)
        self.reply = reply

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = json.loads(handler.rfile.read(int(handler.headers.get("Content-Length") or 0)) or b"{}")
        self.requests.append({"path": handler.path, "body": body})
        self.reply(handler, body)


@pytest.fixture
def scripted() -> Iterator[Callable[..., _Scripted]]:
    started: list[_Scripted] = []

    def start(reply: Callable[[BaseHTTPRequestHandler, dict[str, Any]], None], **kw: Any) -> _Scripted:
        started.append(_Scripted(reply, **kw))
        started[-1].start()
        return started[-1]

    yield start
    for server in started:
        server.stop()


def post(url: str, line: str | None = None, body: dict[str, Any] | None = None, **kw: Any) -> requests.Response:
    return requests.post(f"{url}{PATH}", json=body or BODY, headers={LINE_HEADER: line} if line else {}, timeout=30,
                         **kw)


def _answer(handler: BaseHTTPRequestHandler, status: int, data: bytes, content_type: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
    handler.wfile.flush()


# --- failures that take an endpoint down -------------------------------------------------------------------------

def _html_200(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    _answer(handler, 200, b"<html>captive portal</html>", "text/html")


def _cut_off(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    handler.wfile.write(b"10\r\n{\"choices\": [{\"")  # a chunk announced as 16 bytes, then the connection drops
    handler.wfile.flush()
    handler.close_connection = True


def _slow(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    time.sleep(0.6)
    with contextlib.suppress(OSError):  # the proxy gave up on it
        _answer(handler, 200, b"{}", "application/json")


@pytest.mark.parametrize(("reply", "timeout", "status", "kind", "reason"), [
    (_html_200, 600, 502, "cannot connect", "a truncated or non-JSON answer"),
    (_cut_off, 600, 502, "cannot connect", "a broken answer (ChunkedEncodingError)"),
    (_slow, 0.1, 504, "timeout", "no answer within 0.1 s"),
], ids=["non-json-200", "cut-off", "timeout"])
def test_repeated_failures_take_the_endpoint_down_with_their_reason_and_kind(
        tmp_path: Path, server: ProxyServer, scripted: Callable[..., _Scripted],
        reply: Callable[..., None], timeout: float, status: int, kind: str, reason: str) -> None:
    upstream = scripted(reply)
    run = server.open_run("f", CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"},
                          call_timeout=timeout)
    for i in range(FAILURES_BEFORE_DOWN):
        assert post(run.url_for("openai"), f"f|{i}").status_code == status
        assert run.failure(i) == kind
    assert run.down() == f"openai: {FAILURES_BEFORE_DOWN} calls in a row failed, the last with {reason}"
    with pytest.raises(requests.ConnectionError):  # down: the next call is reset at once, and keeps its cause
        post(run.url_for("openai"), "f|9")
    assert run.failure(9) == kind and len(upstream.requests) == FAILURES_BEFORE_DOWN
    assert run.stats.recorded == 0 and not (tmp_path / "c.json").exists()


def test_a_refused_endpoint_gives_every_later_line_the_same_cause(tmp_path: Path, server: ProxyServer) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = server.open_run("r", CacheSettings("record", tmp_path / "c.json"), {"openai": f"http://127.0.0.1:{port}"})
    for i in range(3):
        with pytest.raises(requests.ConnectionError):
            post(run.url_for("openai"), f"r|{i}")
    assert [run.failure(i) for i in range(3)] == ["connection refused"] * 3


def test_an_endpoint_url_requests_cannot_call_is_a_502_naming_the_connection(tmp_path: Path,
                                                                           server: ProxyServer) -> None:
    run = server.open_run("s", CacheSettings("record", tmp_path / "c.json"), {"gpt": "ftp://127.0.0.1:1/v1"})
    for i in range(FAILURES_BEFORE_DOWN):
        response = post(run.url_for("gpt"), f"s|{i}")
        assert response.status_code == 502
        assert response.json()["error"] == {"message": "llmops-ci cache: cannot reach gpt: InvalidSchema",
                                             "type": "invalid_request_error", "code": "llmops_ci_proxy"}
    assert run.down() == "gpt: 5 calls in a row failed, the last with InvalidSchema"


# --- error answers that are not JSON ------------------------------------------------------------------------------

def test_an_error_page_is_passed_on_as_an_openai_error_with_its_text(tmp_path: Path, server: ProxyServer,
                                                                   scripted: Callable[..., _Scripted]) -> None:
    """A gateway's HTML error page: the client gets the status and an OpenAI-style error carrying the page's first
    500 characters (what it needs to see what went wrong), never the page as a JSON string."""
    page = "<html><body>" + "Bad gateway. " * 60 + "</body></html>"
    upstream = scripted(lambda handler, body: _answer(handler, 503, page.encode(), "text/html"))
    run = server.open_run("e", CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"})
    response = post(run.url_for("openai"), "e|0")
    assert response.status_code == 503
    assert response.json() == {"error": {"message": page[:500], "type": "invalid_request_error",
                                         "code": "llmops_ci_proxy"}}


def test_an_empty_error_answer_is_an_openai_error_too(tmp_path: Path, server: ProxyServer,
                                                      scripted: Callable[..., _Scripted]) -> None:
    upstream = scripted(lambda handler, body: _answer(handler, 404, b"", "text/plain"))
    run = server.open_run("e", CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"})
    response = post(run.url_for("openai"), "e|0")
    assert response.status_code == 404 and response.json()["error"]["message"] == ""
    assert run.down() is None and run.failure(0) is None


# --- SSE as endpoints write it ------------------------------------------------------------------------------------

def _sse(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    """Comments (keep-alives), ``event:`` lines and ``data:`` without a space are all valid server-sent events."""
    first = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
    usage = {"object": "chat.completion.chunk", "choices": [],
             "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}
    text = (f": keep-alive\n\nevent: message\ndata:{json.dumps(first)}\n\n: ping\n\n"
            f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n")
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(text.encode())
    handler.wfile.flush()
    handler.close_connection = True


def test_only_the_data_of_server_sent_events_is_recorded_and_passed_on(tmp_path: Path, server: ProxyServer,
                                                                       scripted: Callable[..., _Scripted]) -> None:
    upstream = scripted(_sse)
    run = server.open_run("s", CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"})
    body = {**BODY, "stream": True}
    response = post(run.url_for("openai"), "s|0", body, stream=True)
    seen = [x for x in response.iter_lines(decode_unicode=True) if x]
    first = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
    assert response.status_code == 200 and seen == [f"data: {json.dumps(first)}", "data: [DONE]"]
    assert run.tokens(0) == {"prompt": 2, "completion": 1, "total": 3}
    run.close()
    (saved,) = json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))["entries"]
    assert saved["response"]["status"] == 200 and saved["request"] == body
    assert [json.loads(c) if c != "[DONE]" else c for c in saved["response"]["stream"]] == [
        first, {"object": "chat.completion.chunk", "choices": [],
                "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}, "[DONE]"]


# --- routes -------------------------------------------------------------------------------------------------------

def test_a_shared_connection_carries_an_azure_deployment_path(tmp_path: Path, server: ProxyServer,
                                                              scripted: Callable[..., _Scripted]) -> None:
    upstream = scripted(lambda handler, body: _answer(handler, 200, b'{"choices": []}', "application/json"))
    run = server.open_run("one", CacheSettings("record", tmp_path / "c.json"), {"azure": upstream.url})
    url = f"{run.shared_url('azure')}/openai/deployments/gpt4o"
    assert post(url, "one|0").json() == {"choices": []}
    assert upstream.requests[0]["path"] == "/openai/deployments/gpt4o/chat/completions"


def test_a_route_that_only_looks_like_a_runs_is_unknown(tmp_path: Path, server: ProxyServer) -> None:
    run = server.open_run("t", CacheSettings("replay", tmp_path / "c.json"), {"openai": None})
    for path in ("/x/t/u/openai", "/r/t/x/openai", "/r/t/u"):
        response = post(server.url + path, "t|0")
        assert response.status_code == 404, path
        assert response.json()["error"]["message"].startswith("llmops-ci proxy: unknown route /")
    assert run.stats.to_json() == {"mode": "replay", "hits": 0, "misses": 0, "recorded": 0, "tokens_saved": 0}


def test_an_endpoints_json_error_reaches_the_client_unchanged(tmp_path: Path, server: ProxyServer) -> None:
    """The client (openai's SDK) reads ``type``, ``code`` and ``param`` of an error: they pass as the endpoint wrote
    them, not rewrapped."""
    upstream = FakeOpenAI()
    upstream.start()
    try:
        run = server.open_run("j", CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"})
        failing = {**BODY, "messages": [{"role": "user", "content": "FAIL"}]}
        response = post(run.url_for("openai"), "j|0", failing)
    finally:
        upstream.stop()
    assert response.status_code == 400
    assert response.json() == {"error": {"message": "fake failure (FAIL in prompt)", "type": "invalid_request_error"}}
