"""What the endpoint and the client see through the record/replay proxy, in the cases the other proxy tests leave
open: the request as the client sent it, streams that stay streams, endpoints that refuse ``stream_options``,
replayed streams with and without usage, and what the log says when an endpoint goes down."""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from llmops_ci.llm.cache import FAILURES_BEFORE_DOWN, LINE_HEADER, LlmProxy, ProxyServer
from llmops_ci.llm.cassette import CacheSettings, request_key
from tests.fakes.openai import FakeOpenAI

PATH = "/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
AUTH = {"Authorization": "Bearer sk-test-" + "k" * 24}
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def post(url: str, body: dict[str, Any] | None = None, line: str | None = None, **kw: Any) -> requests.Response:
    headers = {**AUTH, **({LINE_HEADER: line} if line else {})}
    return requests.post(f"{url}{PATH}", json=body or BODY, headers=headers, timeout=30, **kw)


def events(response: requests.Response) -> list[str]:
    return [x.removeprefix("data: ") for x in response.iter_lines(decode_unicode=True) if x]


def chunk(content: str | None, usage: Any = "absent", **more: Any) -> str:
    obj: dict[str, Any] = {"object": "chat.completion.chunk", **more,
                           "choices": [] if content is None else [{"index": 0, "delta": {"content": content}}]}
    if usage != "absent":
        obj["usage"] = usage
    return json.dumps(obj)


def stream_cassette(tmp_path: Path, chunks: list[str], body: dict[str, Any]) -> Path:
    path = tmp_path / "cassettes" / "flow.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"key": request_key("openai", PATH, body), "upstream": "openai", "path": PATH, "request": body,
             "response": {"status": 200, "stream": chunks}}
    path.write_text(json.dumps({"version": 1, "entries": [entry]}), encoding="utf-8")
    return path


# --- what the endpoint receives ----------------------------------------------------------------------------------

@pytest.mark.parametrize("base", ["/v1", "/v1/"])
def test_the_endpoint_gets_the_clients_request_unchanged(tmp_path: Path, upstream: FakeOpenAI, base: str) -> None:
    """A plain call reaches the endpoint at the connection's URL (a trailing slash in it or not) with the body the
    client sent: nothing added (``stream_options`` on a call that does not stream is refused by OpenAI)."""
    with LlmProxy(CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + base}) as proxy:
        assert post(proxy.url_for("openai")).ok
    (got,) = upstream.requests
    assert got["path"] == "/v1/chat/completions" and got["body"] == BODY and got["api_key"] == AUTH[
        "Authorization"].removeprefix("Bearer ")


def test_an_azure_query_reaches_the_endpoint(tmp_path: Path, upstream: FakeOpenAI) -> None:
    with LlmProxy(CacheSettings("record", tmp_path / "c.json"), {"azure": upstream.url}) as proxy:
        url = f"{proxy.url_for('azure')}/openai/deployments/gpt4o"
        assert requests.post(f"{url}{PATH}?api-version=2024-06-01", json=BODY, headers={"api-key": "k" * 32},
                             timeout=30).ok
        assert requests.post(f"{url}{PATH}", json=BODY, headers={"api-key": "k" * 32}, timeout=30).ok
    deployment = "/openai/deployments/gpt4o/chat/completions"
    assert [r["path"] for r in upstream.requests] == [f"{deployment}?api-version=2024-06-01", deployment]


def test_a_streamed_call_asks_for_usage_and_keeps_the_clients_other_stream_options(
        tmp_path: Path, upstream: FakeOpenAI) -> None:
    body = {**BODY, "stream": True, "stream_options": {"include_obfuscation": False}}
    with LlmProxy(CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"}) as proxy:
        seen = events(post(proxy.url_for("openai"), body, stream=True))
    assert upstream.requests[0]["body"]["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert seen[-1] == "[DONE]" and not any('"usage"' in e for e in seen)  # the client did not ask: none shown
    assert proxy.run is not None and proxy.run.tokens(0) is None and proxy.run.usage[None].total == 5


def test_a_session_given_to_the_proxy_is_the_one_that_calls_the_endpoint(tmp_path: Path,
                                                                        upstream: FakeOpenAI) -> None:
    """A caller's session (its proxies, certificates, pool sizes) carries the calls, not a default one."""
    sent: list[str] = []

    class Counting(HTTPAdapter):
        def send(self, request: requests.PreparedRequest, **kw: Any) -> requests.Response:  # type: ignore[override]
            sent.append(str(request.url))
            return super().send(request, **kw)

    session = requests.Session()
    session.mount("http://", Counting())
    with LlmProxy(CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"}, session) as proxy:
        assert post(proxy.url_for("openai")).ok
    assert sent == [upstream.url + "/v1/chat/completions"]


# --- a stream stays a stream -------------------------------------------------------------------------------------

class _Trickle(FakeOpenAI):
    """Sends the first chunk of a streamed answer, then waits until the test has seen it before finishing; in HTTP
    chunks, as OpenAI's endpoints send a stream."""

    def __init__(self, refuse_stream_options: bool = False) -> None:
        super().__init__()
        self.refuse_stream_options = refuse_stream_options
        self.client_saw_first = threading.Event()
        self.waited_in_vain = False

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        def send(data: str) -> None:
            raw = data.encode()
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
            handler.wfile.flush()

        body = json.loads(handler.rfile.read(int(handler.headers.get("Content-Length") or 0)))
        if self.refuse_stream_options and "stream_options" in body:
            return self._json(handler, 400, {"error": {
                "message": "Unrecognized request argument supplied: stream_options", "type": "invalid_request_error"}})
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        send(f"data: {chunk('first')}\n\n")
        self.waited_in_vain = not self.client_saw_first.wait(10)
        send(f"data: {chunk('second')}\n\n")
        send("data: [DONE]\n\n")
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
        return None


@pytest.mark.parametrize("refuse_stream_options", [False, True])
def test_streamed_chunks_reach_the_client_as_they_come(tmp_path: Path, refuse_stream_options: bool) -> None:
    """Time to first token is what streaming is for: the proxy passes each chunk on before the answer is over (also
    when the endpoint refused ``stream_options`` and was asked again without)."""
    upstream = _Trickle(refuse_stream_options)
    upstream.start()
    try:
        with LlmProxy(CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url}) as proxy:
            response = post(proxy.url_for("openai"), {**BODY, "stream": True}, stream=True)
            lines = response.iter_lines(chunk_size=1, decode_unicode=True)  # what arrives, as httpx reads it
            first = next(x for x in lines if x)
            upstream.client_saw_first.set()
            rest = [x for x in lines if x]
        assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["content"] == "first"
        assert not upstream.waited_in_vain and rest[-1] == "data: [DONE]"
        assert proxy.stats.recorded == 1
    finally:
        upstream.stop()


# --- endpoints that refuse stream_options (older Azure OpenAI api-versions) ------------------------------------

class _NoStreamOptions(FakeOpenAI):
    """Azure OpenAI before api-version 2024-09-01-preview answers a ``stream_options`` field with 400
    "Unrecognized request argument supplied: stream_options"; ``slow_retry`` makes the call without it hang."""

    def __init__(self, slow_retry: float = 0.0) -> None:
        super().__init__(slow_seconds=slow_retry)
        self.headers: list[dict[str, str]] = []

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        self.headers.append(dict(handler.headers.items()))
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        body = json.loads(raw or b"{}")
        if "stream_options" in body:
            self.requests.append({"path": handler.path, "body": body})
            return self._json(handler, 400, {"error": {
                "message": "Unrecognized request argument supplied: stream_options", "type": "invalid_request_error",
                "param": None, "code": None}})
        if self.slow_seconds:
            import time

            time.sleep(self.slow_seconds)
        handler.rfile = __import__("io").BytesIO(raw)  # let the faithful fake answer the call itself
        return super().handle(handler)


def test_an_endpoint_refusing_stream_options_gets_the_call_as_the_client_sent_it(tmp_path: Path) -> None:
    upstream = _NoStreamOptions()
    upstream.start()
    body = {**BODY, "stream": True}
    try:
        url = upstream.url + "/openai/deployments/gpt4o"
        with LlmProxy(CacheSettings("record", tmp_path / "c.json"), {"azure": url}) as proxy:
            response = requests.post(f"{proxy.url_for('azure')}{PATH}?api-version=2024-02-01", json=body,
                                     headers={"api-key": "a" * 32}, stream=True, timeout=30)
            assert response.status_code == 200 and response.headers["Content-Type"] == "text/event-stream"
            seen = events(response)
        assert seen[-1] == "[DONE]" and "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                                                for e in seen[:-1] if json.loads(e)["choices"]).startswith("ECHO")
        asked, plain = upstream.requests
        assert asked["body"]["stream_options"] == {"include_usage": True}
        assert plain["body"] == body and plain["path"] == asked["path"] == (
            "/openai/deployments/gpt4o/chat/completions?api-version=2024-02-01")
        assert [h.get("api-key") for h in upstream.headers] == ["a" * 32, "a" * 32]
        assert proxy.stats.recorded == 1
        (saved,) = json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))["entries"]
        assert saved["response"]["stream"] == seen and saved["request"] == body
    finally:
        upstream.stop()


def test_the_call_without_stream_options_is_still_bounded_by_the_call_timeout(tmp_path: Path,
                                                                             server: ProxyServer) -> None:
    upstream = _NoStreamOptions(slow_retry=2.0)
    upstream.start()
    try:
        run = server.open_run("t", CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"},
                              call_timeout=0.3)
        response = post(run.url_for("openai"), {**BODY, "stream": True}, line="t|0", stream=True)
        assert response.status_code == 504 and run.failure(0) == "timeout"
    finally:
        upstream.stop()


def test_a_client_that_asked_for_usage_itself_is_not_asked_again(tmp_path: Path) -> None:
    """The client's own stream_options were refused: the endpoint's 400 is the client's answer, sent once."""
    upstream = _NoStreamOptions()
    upstream.start()
    try:
        body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
        with LlmProxy(CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"}) as proxy:
            response = post(proxy.url_for("openai"), body, stream=True)
        assert response.status_code == 400 and "stream_options" in response.json()["error"]["message"]
        assert len(upstream.requests) == 1 and proxy.stats.recorded == 0
    finally:
        upstream.stop()


def test_other_client_errors_of_a_stream_are_not_retried(tmp_path: Path, upstream: FakeOpenAI) -> None:
    failing = {**BODY, "stream": True, "messages": [{"role": "user", "content": "FAIL"}]}
    with LlmProxy(CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"}) as proxy:
        response = post(proxy.url_for("openai"), failing, stream=True)
    assert response.status_code == 400 and "fake failure" in response.json()["error"]["message"]
    assert len(upstream.requests) == 1 and proxy.stats.recorded == 0


# --- replayed streams --------------------------------------------------------------------------------------------

def test_a_replayed_stream_shows_usage_only_to_a_client_that_asked(tmp_path: Path, server: ProxyServer) -> None:
    recorded = [chunk("Hi", None), chunk("!", None), chunk(None, USAGE), "[DONE]"]
    asked = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    plain = {**BODY, "stream": True}
    path = stream_cassette(tmp_path, recorded, asked)
    cassette = json.loads(path.read_text(encoding="utf-8"))
    cassette["entries"].append({**cassette["entries"][0], "key": request_key("openai", PATH, plain),
                                "request": plain})
    path.write_text(json.dumps(cassette), encoding="utf-8")
    run = server.open_run("p", CacheSettings("replay", path), {"openai": None})
    response = post(run.url_for("openai"), asked, line="p|0", stream=True)
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/event-stream"
    assert events(response) == recorded  # as OpenAI sends them to a client that asks
    shown = events(post(run.url_for("openai"), plain, line="p|1", stream=True))
    assert shown == [chunk("Hi"), chunk("!"), "[DONE]"]  # as OpenAI sends them to one that does not
    assert run.tokens(0) == run.tokens(1) == {"prompt": 7, "completion": 3, "total": 10}
    assert run.stats.tokens_saved == 20


def test_a_content_filter_chunk_without_choices_reaches_the_client(tmp_path: Path, server: ProxyServer) -> None:
    """Azure OpenAI's first chunk carries ``prompt_filter_results`` and no choices: it is not a usage chunk."""
    body = {**BODY, "stream": True}
    azure_first = chunk(None, prompt_filter_results=[{"prompt_index": 0, "content_filter_results": {}}])
    recorded = [azure_first, chunk("Hi", None), chunk(None, USAGE), "[DONE]"]
    run = server.open_run("f", CacheSettings("replay", stream_cassette(tmp_path, recorded, body)), {"openai": None})
    assert events(post(run.url_for("openai"), body, line="f|0", stream=True)) == [azure_first, chunk("Hi"), "[DONE]"]


def test_a_replayed_stream_without_usage_counts_no_tokens(tmp_path: Path, server: ProxyServer) -> None:
    body = {**BODY, "stream": True}
    recorded = [chunk("Hi"), "[DONE]"]
    run = server.open_run("n", CacheSettings("replay", stream_cassette(tmp_path, recorded, body)), {"openai": None})
    assert events(post(run.url_for("openai"), body, line="n|3", stream=True)) == recorded
    assert run.tokens(3) == {"prompt": 0, "completion": 0, "total": 0} and run.stats.tokens_saved == 0
    assert run.stats.hits == 1


def test_usage_after_a_chunk_that_is_not_json_still_counts(tmp_path: Path, server: ProxyServer) -> None:
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    recorded = [chunk("Hi", None), ": keep-alive", chunk(None, USAGE), "[DONE]"]
    run = server.open_run("k", CacheSettings("replay", stream_cassette(tmp_path, recorded, body)), {"openai": None})
    assert events(post(run.url_for("openai"), body, line="k|0", stream=True)) == recorded
    assert run.tokens(0) == {"prompt": 7, "completion": 3, "total": 10} and run.stats.tokens_saved == 10


# --- an endpoint going down, as the log tells it -----------------------------------------------------------------

def test_the_log_names_the_connection_that_went_down_and_why(tmp_path: Path, server: ProxyServer,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    upstream = FakeOpenAI(fault="500").start()
    caplog.set_level(logging.ERROR, "llmops_ci.llm_cache")
    try:
        run = server.open_run("d", CacheSettings("record", tmp_path / "c.json"), {"gpt": upstream.url + "/v1"})
        for i in range(FAILURES_BEFORE_DOWN):
            post(run.url_for("gpt"), line=f"d|{i}")
    finally:
        upstream.stop()
    (record,) = caplog.records
    assert record.getMessage() == ("LLM endpoint of 'gpt' is down (5 calls in a row failed, the last with HTTP 500): "
                                   "its remaining calls fail at once")


def test_a_dead_endpoint_leaves_no_traceback_in_the_log(tmp_path: Path, server: ProxyServer,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    """The proxy answers a call to a dead endpoint with a reset; its request thread then ends quietly (a CI log with
    a traceback in it reads as a crash of the tool)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens
    run = server.open_run("z", CacheSettings("record", tmp_path / "c.json"), {"openai": f"http://127.0.0.1:{port}"})
    earlier = set(threading.enumerate())  # other tests' servers may still have request threads going
    body = json.dumps(BODY).encode()
    path = run.url_for("openai").removeprefix(server.url) + PATH
    clients = []
    for i in range(2):  # refused, then already down
        with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10) as conn:
            clients.append(conn.getsockname())
            conn.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         f"{LINE_HEADER}: z|{i}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            with pytest.raises(ConnectionResetError):
                while conn.recv(4096):
                    pass
    for thread in set(threading.enumerate()) - earlier:
        if "process_request_thread" in thread.name:
            thread.join(10)
    err = capfd.readouterr().err
    for client in clients:  # socketserver reports a failed request thread as "... request from <client>"
        assert f"request from {tuple(client)}" not in err
    assert run.failure(0) == run.failure(1) == "connection refused"
