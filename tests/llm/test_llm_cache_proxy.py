"""The record/replay proxy as a run sees it: statuses kept, what is recorded, per-line tokens, failures, routes."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import requests

from llmops_ci.core import redaction
from llmops_ci.llm.cache import FAILURES_BEFORE_DOWN, LINE_HEADER, Health, LlmProxy, ProxyServer
from llmops_ci.llm.cassette import CacheSettings, CacheStats, Cassette, CassetteProvenance, LineUsage, request_key
from tests.fakes.openai import FakeOpenAI

PATH = "/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def entry(response: dict[str, Any], body: dict[str, Any] | None = None, key: str | None = None) -> dict[str, Any]:
    body = body or BODY
    return {"key": key or request_key("openai", PATH, body), "upstream": "openai", "path": PATH, "request": body,
            "response": response}


def cassette(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "cassettes" / "flow.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "entries": list(entries)}), encoding="utf-8")
    return path


def post(url: str, body: dict[str, Any] | None = None, line: str | None = None, **kw: Any) -> requests.Response:
    headers = {"Authorization": "Bearer sk-test-" + "k" * 24, **({LINE_HEADER: line} if line else {})}
    return requests.post(f"{url}{PATH}", json=body or BODY, headers=headers, timeout=10, **kw)


def answer(content: str, usage: dict[str, int] | None = None) -> dict[str, Any]:
    return {"status": 200, "body": {"choices": [{"message": {"role": "assistant", "content": content}}],
                                    "usage": usage or USAGE}}


# --- replay keeps what was recorded -----------------------------------------------------------------------------

@pytest.mark.parametrize("status", [400, 404, 429, 500, 201])
def test_a_recorded_status_replays_as_that_status(tmp_path: Path, status: int) -> None:
    error = {"error": {"message": "recorded failure", "type": "x"}}
    path = cassette(tmp_path, entry({"status": status, "body": error}))
    with LlmProxy(CacheSettings("replay", path), {"openai": None}) as proxy:
        response = post(proxy.url_for("openai"))
    assert response.status_code == status and response.json() == error
    assert (proxy.stats.hits, proxy.stats.misses) == (1, 0)


def test_a_recorded_answer_without_status_is_a_200(tmp_path: Path) -> None:
    path = cassette(tmp_path, entry({"body": {"choices": [], "usage": USAGE}}))
    with LlmProxy(CacheSettings("replay", path), {"openai": None}) as proxy:
        response = post(proxy.url_for("openai"))
    assert response.status_code == 200 and response.json() == {"choices": [], "usage": USAGE}
    assert response.headers["Content-Type"] == "application/json"
    assert proxy.stats.tokens_saved == 10


@pytest.mark.parametrize("status", [99, 600, 0, -200, "200", True, 200.0, None])
def test_an_entry_whose_status_is_no_http_status_is_dropped(tmp_path: Path, status: Any,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    path = cassette(tmp_path, entry({"status": status, "body": {"choices": []}}))
    caplog.set_level(logging.WARNING, "llmops_ci.llm_cache")
    loaded = Cassette.load(path)
    assert loaded.entries == {} and loaded.dirty is True
    assert "entry 1 ignored (its status is not an HTTP status code)" in caplog.text


@pytest.mark.parametrize("status", [100, 599, 200])
def test_statuses_at_the_ends_of_the_range_are_kept(tmp_path: Path, status: int) -> None:
    path = cassette(tmp_path, entry({"status": status, "body": {"choices": []}}))
    loaded = Cassette.load(path)
    assert list(loaded.entries) == [request_key("openai", PATH, BODY)] and loaded.dirty is False


@pytest.mark.parametrize(("response", "problem"), [
    ({"status": 200, "body": {"error": {"message": "x"}}}, "it recorded an error as a success"),
    ({"body": {"error": {"message": "x"}}}, "it recorded an error as a success"),
    ({"status": 200, "body": "<html>"}, "its body is not a JSON object"),
    ({"status": 200, "stream": "data"}, "its stream is not a list of text chunks"),
    ({"status": 200, "stream": ["a", 1]}, "its stream is not a list of text chunks"),
    ("ok", "no 'response'"),
])
def test_entries_that_cannot_be_replayed_are_dropped_with_the_reason(
        tmp_path: Path, response: Any, problem: str, caplog: pytest.LogCaptureFixture) -> None:
    path = cassette(tmp_path, entry(answer("fine"), key="good"), entry(response))
    caplog.set_level(logging.WARNING, "llmops_ci.llm_cache")
    loaded = Cassette.load(path)
    assert list(loaded.entries) == ["good"]
    assert f"entry 2 ignored ({problem}" in caplog.text


@pytest.mark.parametrize(("broken", "problem"), [
    ([1], "not an object"),
    ({"upstream": "openai", "path": PATH, "response": {}}, "no 'key'"),
    ({"key": "k", "path": PATH, "response": {}}, "no 'upstream'"),
    ({"key": "k", "upstream": "openai", "path": 3, "response": {}}, "no 'path'"),
])
def test_entries_without_their_fields_are_dropped(tmp_path: Path, broken: Any, problem: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "llmops_ci.llm_cache")
    assert Cassette.load(cassette(tmp_path, broken)).entries == {}
    assert f"({problem})" in caplog.text


def test_a_recorded_error_with_another_status_and_a_200_with_more_than_an_error_are_kept(tmp_path: Path) -> None:
    path = cassette(tmp_path, entry({"status": 400, "body": {"error": {"message": "x"}}}, key="a"),
                    entry({"status": 200, "body": {"error": None, "choices": []}}, key="b"),
                    entry({"status": 200, "stream": ["{}", "[DONE]"]}, key="c"))
    assert sorted(Cassette.load(path).entries) == ["a", "b", "c"]


def test_a_missing_cassette_loads_empty_and_entries_default_to_none(tmp_path: Path) -> None:
    assert Cassette.load(tmp_path / "none.json").entries == {}
    path = tmp_path / "empty.json"
    path.write_text('{"version": 1}', encoding="utf-8")
    loaded = Cassette.load(path)
    assert loaded.entries == {} and loaded.dirty is False


# --- what is recorded --------------------------------------------------------------------------------------------

def test_recording_keeps_the_request_and_the_answer_and_counts_every_call(tmp_path: Path,
                                                                          upstream: FakeOpenAI) -> None:
    bodies = [{**BODY, "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(3)]
    settings = CacheSettings("record", tmp_path / "c.json")
    with LlmProxy(settings, {"openai": upstream.url + "/v1"}) as proxy:
        answers = [post(proxy.url_for("openai"), body).json() for body in bodies]
    assert (proxy.stats.recorded, proxy.stats.hits, proxy.stats.misses) == (3, 0, 3)
    saved = json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))
    assert saved["version"] == 1
    by_key = {e["key"]: e for e in saved["entries"]}
    for body, got in zip(bodies, answers, strict=True):
        recorded = by_key[request_key("openai", PATH, body)]
        assert recorded["request"] == body and recorded["upstream"] == "openai" and recorded["path"] == PATH
        assert recorded["response"] == {"status": 200, "body": got}
    assert stat.S_IMODE(os.stat(tmp_path / "c.json").st_mode) == 0o644
    with LlmProxy(CacheSettings("replay", tmp_path / "c.json"), {"openai": None}) as proxy:
        assert [post(proxy.url_for("openai"), body).json() for body in bodies] == answers
    assert (proxy.stats.hits, proxy.stats.misses, proxy.stats.recorded) == (3, 0, 0)
    assert proxy.stats.tokens_saved == sum(a["usage"]["total_tokens"] for a in answers)


def test_record_mode_never_replays(tmp_path: Path, upstream: FakeOpenAI) -> None:
    path = cassette(tmp_path, entry(answer("stale")))
    with LlmProxy(CacheSettings("record", path), {"openai": upstream.url + "/v1"}) as proxy:
        got = post(proxy.url_for("openai")).json()
    assert got["choices"][0]["message"]["content"].startswith("ECHO") and len(upstream.requests) == 1
    assert (proxy.stats.hits, proxy.stats.recorded) == (0, 1)


def test_mode_off_forwards_and_writes_nothing(tmp_path: Path, upstream: FakeOpenAI) -> None:
    path = cassette(tmp_path, entry(answer("recorded")))
    before = path.read_bytes()
    server = ProxyServer().start()
    try:
        run = server.open_run("t", CacheSettings("off", path), {"openai": upstream.url + "/v1"})
        response = post(run.url_for("openai"), line="t|4")
        run.close()
    finally:
        server.stop()
    assert response.json()["choices"][0]["message"]["content"].startswith("ECHO")  # not the recording
    assert path.read_bytes() == before
    assert run.stats.to_json() == {"mode": "off", "hits": 0, "misses": 0, "recorded": 0, "tokens_saved": 0}
    assert run.tokens(4) == {"prompt": 2, "completion": 3, "total": 5}


def test_mode_off_creates_no_cassette(tmp_path: Path, upstream: FakeOpenAI) -> None:
    with LlmProxy(CacheSettings("off", tmp_path / "none" / "c.json"), {"openai": upstream.url + "/v1"}) as proxy:
        assert post(proxy.url_for("openai")).ok
    assert not (tmp_path / "none").exists()


def test_upstream_errors_are_passed_on_and_never_recorded(tmp_path: Path, upstream: FakeOpenAI) -> None:
    failing = {**BODY, "messages": [{"role": "user", "content": "FAIL please"}]}
    with LlmProxy(CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"}) as proxy:
        response = post(proxy.url_for("openai"), failing)
    assert response.status_code == 400 and "fake failure" in response.json()["error"]["message"]
    assert proxy.stats.recorded == 0 and not (tmp_path / "c.json").exists()


# --- per-line tokens -------------------------------------------------------------------------------------------

def test_tokens_are_counted_per_line_for_recorded_and_replayed_calls(tmp_path: Path, server: ProxyServer,
                                                                     upstream: FakeOpenAI) -> None:
    other = {**BODY, "messages": [{"role": "user", "content": "one two three"}]}
    path = cassette(tmp_path, entry(answer("x", {"prompt_tokens": 100, "completion_tokens": 20,
                                                 "total_tokens": 120})))
    run = server.open_run("run1", CacheSettings("auto", path), {"openai": upstream.url + "/v1"})
    post(run.url_for("openai"), line="run1|2")  # replayed
    post(run.url_for("openai"), other, line="run1|2")  # recorded: 3 prompt words, ECHO + 3 words
    post(run.url_for("openai"), other, line="run1|5")  # now replayed
    post(run.url_for("openai"), other, line="other|7")  # another run's tag: not this run's line
    post(run.url_for("openai"), other)  # no line at all
    assert run.tokens(2) == {"prompt": 103, "completion": 24, "total": 127}
    assert run.tokens(5) == {"prompt": 3, "completion": 4, "total": 7}
    assert run.tokens(7) is None and run.tokens(0) is None
    assert run.usage[None].to_json() == {"prompt": 6, "completion": 8, "total": 14}
    assert (run.stats.hits, run.stats.misses, run.stats.recorded) == (4, 1, 1)
    assert run.stats.tokens_saved == 120 + 3 * 7


def test_streamed_calls_count_the_usage_chunk(tmp_path: Path, upstream: FakeOpenAI, server: ProxyServer) -> None:
    run = server.open_run("s", CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"})
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    events = [x for x in post(run.url_for("openai"), body, line="s|1", stream=True).iter_lines(decode_unicode=True)
              if x]
    assert events[-1] == "data: [DONE]"
    assert run.tokens(1) == {"prompt": 2, "completion": 3, "total": 5}
    run.close()
    (saved,) = json.loads((tmp_path / "c.json").read_text())["entries"]
    assert saved["response"]["stream"] == [e.removeprefix("data: ") for e in events]


def test_line_usage_ignores_what_is_no_count() -> None:
    usage = LineUsage()
    usage.add({"prompt_tokens": 5, "completion_tokens": True, "total_tokens": "9"})
    usage.add({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})
    usage.add({})
    assert usage.to_json() == {"prompt": 6, "completion": 2, "total": 3}


def test_stats_say_recorded_in_change_only_when_known() -> None:
    assert CacheStats("replay", 1, 2, 3, 4).to_json() == {"mode": "replay", "hits": 1, "misses": 2, "recorded": 3,
                                                          "tokens_saved": 4}
    assert CacheStats("replay", recorded_in_change=0).to_json()["recorded_in_change"] == 0


# --- provenance and repeats --------------------------------------------------------------------------------------

def test_answers_recorded_in_the_change_are_counted_or_refused(tmp_path: Path, server: ProxyServer) -> None:
    second = {**BODY, "messages": [{"role": "user", "content": "second"}]}
    old, new = request_key("openai", PATH, BODY), request_key("openai", PATH, second)
    path = cassette(tmp_path, entry(answer("base")), entry(answer("new"), second))
    counted = CassetteProvenance("abc", frozenset({new}), frozenset({old}))
    run = server.open_run("a", CacheSettings("replay", path, counted), {"openai": None})
    assert run.stats.recorded_in_change == 0
    assert post(run.url_for("openai")).ok and post(run.url_for("openai"), second).ok
    assert post(run.url_for("openai"), second).ok
    assert (run.stats.hits, run.stats.recorded_in_change) == (3, 2)
    refused = CassetteProvenance("abc", frozenset({new}), frozenset({old}), base_only=True)
    run = server.open_run("b", CacheSettings("replay", path, refused), {"openai": None})
    assert post(run.url_for("openai")).ok
    assert post(run.url_for("openai"), second).status_code == 400
    assert (run.stats.hits, run.stats.misses, run.stats.recorded_in_change) == (1, 1, 0)


def test_each_repeat_of_a_line_replays_its_own_answer(tmp_path: Path, server: ProxyServer) -> None:
    key = request_key("openai", PATH, BODY)
    path = cassette(tmp_path, entry(answer("first"), key=key), entry(answer("second"), key=f"{key}#1"),
                    entry(answer("third"), key=f"{key}#2"))
    run = server.open_run("r", CacheSettings("replay", path, repeats=3), {"openai": None})

    def content(line: str | None) -> str:
        return post(run.url_for("openai"), line=line).json()["choices"][0]["message"]["content"]

    assert [content(f"r|{i}") for i in (0, 1, 2, 3, 4, 5)] == ["first", "second", "third"] * 2
    untagged = server.open_run("u", CacheSettings("replay", path, repeats=3), {"openai": None})
    run = untagged
    assert [content(None) for _ in range(4)] == ["first", "second", "third", "first"]
    single = server.open_run("one", CacheSettings("replay", path), {"openai": None})
    run = single
    assert [content("one|1"), content("one|2")] == ["first", "first"]


# --- the endpoint failing ----------------------------------------------------------------------------------------

def test_health_goes_down_after_consecutive_failures_only() -> None:
    assert FAILURES_BEFORE_DOWN == 5
    health = Health("openai")
    for _ in range(FAILURES_BEFORE_DOWN - 1):
        health.failed("HTTP 500", kind="server error after retries")
    assert health.down is None
    health.answered()
    for _ in range(FAILURES_BEFORE_DOWN - 1):
        health.failed("HTTP 500", kind="server error after retries")
    assert health.down is None and health.failures == 4
    health.failed("HTTP 503", kind="server error after retries")
    assert health.down == "5 calls in a row failed, the last with HTTP 503"
    assert health.kind == "server error after retries"
    health.failed("HTTP 500", plainly_down=True, kind="other")
    assert health.down == "5 calls in a row failed, the last with HTTP 503" and health.kind == "server error " \
                                                                                            "after retries"
    refused = Health("x")
    refused.failed("cannot connect: refused", plainly_down=True, kind="cannot connect")
    assert (refused.down, refused.kind, refused.failures) == ("cannot connect: refused", "cannot connect", 1)


@pytest.mark.parametrize("fault", ["500", "429"])
def test_server_errors_are_passed_on_and_take_the_endpoint_down(tmp_path: Path, server: ProxyServer,
                                                                fault: str) -> None:
    upstream = FakeOpenAI(fault=fault).start()
    try:
        run = server.open_run("f", CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"})
        statuses = [post(run.url_for("openai"), line=f"f|{i}").status_code for i in range(FAILURES_BEFORE_DOWN)]
        assert statuses == [int(fault)] * FAILURES_BEFORE_DOWN
        assert run.failure(0) == "server error after retries" and run.failure(4) == "server error after retries"
        assert run.down() == f"openai: 5 calls in a row failed, the last with HTTP {fault}"
        with pytest.raises(requests.ConnectionError):  # down: reset at once, as a dead endpoint does
            post(run.url_for("openai"), line="f|9")
        assert run.failure(9) == "server error after retries"
        assert len(upstream.requests) == FAILURES_BEFORE_DOWN
        assert run.stats.recorded == 0
    finally:
        upstream.stop()


def test_a_client_error_keeps_the_endpoint_up(tmp_path: Path, server: ProxyServer, upstream: FakeOpenAI) -> None:
    run = server.open_run("c", CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"})
    failing = {**BODY, "messages": [{"role": "user", "content": "FAIL"}]}
    for i in range(FAILURES_BEFORE_DOWN + 1):
        assert post(run.url_for("openai"), failing, line=f"c|{i}").status_code == 400
    assert run.down() is None and run.failure(0) is None


def test_an_unreachable_endpoint_is_down_at_once(tmp_path: Path, server: ProxyServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens
    run = server.open_run("d", CacheSettings("record", tmp_path / "c.json"), {"openai": f"http://127.0.0.1:{port}"})
    with pytest.raises(requests.ConnectionError):
        post(run.url_for("openai"), line="d|3")
    assert run.failure(3) == "connection refused"
    down = run.down()
    assert down is not None and down.startswith("openai: connection refused: cannot reach http://127.0.0.1")


def test_a_slow_endpoint_times_out_with_504(tmp_path: Path, server: ProxyServer) -> None:
    upstream = FakeOpenAI(fault="slow", slow_seconds=1.0).start()
    try:
        run = server.open_run("t", CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"},
                              call_timeout=0.2)
        response = post(run.url_for("openai"), line="t|1")
        assert response.status_code == 504
        assert response.json()["error"]["message"] == "llmops-ci cache: openai did not answer within 0.2 s"
        assert run.failure(1) == "timeout" and run.down() is None
    finally:
        upstream.stop()


def test_a_truncated_200_is_a_502_and_not_recorded(tmp_path: Path, server: ProxyServer) -> None:
    upstream = FakeOpenAI(fault="truncate").start()
    try:
        run = server.open_run("x", CacheSettings("record", tmp_path / "c.json"), {"openai": upstream.url + "/v1"})
        response = post(run.url_for("openai"), line="x|0")
        assert response.status_code == 502 and run.failure(0) == "cannot connect"
        assert response.json()["error"]["message"] == "llmops-ci cache: openai broke off its answer"
        assert run.stats.recorded == 0 and server.health[upstream.url + "/v1"].failures == 1
    finally:
        upstream.stop()


# --- routes ------------------------------------------------------------------------------------------------------

def test_unknown_routes_and_bodies_that_are_no_json(tmp_path: Path, server: ProxyServer) -> None:
    run = server.open_run("k", CacheSettings("replay", tmp_path / "c.json"), {"openai": None})
    assert run.url_for("openai") == f"{server.url}/r/k/u/openai"
    for url in (f"{server.url}/r/k/u/nope", f"{server.url}/r/gone/u/openai", f"{server.url}/x/y",
                f"{server.url}/e/unknown"):
        response = post(url)
        assert response.status_code == 404
        assert response.json()["error"]["message"].startswith("llmops-ci proxy: unknown route /")
    bad = requests.post(f"{run.url_for('openai')}{PATH}", data=b"{not json", timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "llmops-ci proxy: the request body is not JSON"
    assert bad.json()["error"]["code"] == "llmops_ci_proxy"


def test_environment_routes_find_their_run(tmp_path: Path, upstream: FakeOpenAI) -> None:
    server = ProxyServer(env_upstreams={"OPENAI_BASE_URL": upstream.url + "/v1"}).start()
    try:
        assert server.env_url("OPENAI_BASE_URL") == f"{server.url}/e/OPENAI_BASE_URL"
        one = server.open_run("one", CacheSettings("record", tmp_path / "1.json"), {})
        assert post(server.env_url("OPENAI_BASE_URL"), line="one|2").ok
        assert post(server.env_url("OPENAI_BASE_URL")).ok  # the only run open
        assert one.tokens(2) is not None and one.stats.recorded == 2
        two = server.open_run("two", CacheSettings("record", tmp_path / "2.json"), {})
        assert post(server.env_url("OPENAI_BASE_URL"), line="two|0").ok
        assert two.tokens(0) is not None and two.stats.recorded == 1
        lost = post(server.env_url("OPENAI_BASE_URL"))
        assert lost.status_code == 404
        assert "from outside a run's line while 2 runs are open" in lost.json()["error"]["message"]
        one.close()
        assert "one" not in server.runs and (tmp_path / "1.json").is_file()
        assert post(server.env_url("OPENAI_BASE_URL")).ok  # one run left: it is that run's
        assert two.stats.recorded == 2
    finally:
        server.stop()
    assert (tmp_path / "2.json").is_file()  # stop closes the runs still open


# --- the cassette on disk ---------------------------------------------------------------------------------------

def test_save_orders_entries_writes_only_when_changed_and_redacts(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "c.json"
    saved = Cassette(path)
    saved.save()
    assert not path.exists()  # nothing changed: nothing written
    redaction.add("super-secret-value")
    for upstream, p, key in (("b", "/x", "1"), ("a", "/y", "2"), ("a", "/x", "3"), ("a", "/x", "0")):
        saved.put({"key": key, "upstream": upstream, "path": p, "request": {"k": "super-secret-value"},
                   "response": answer("ok")})
    assert saved.dirty
    saved.save()
    assert not saved.dirty
    data = json.loads(path.read_text(encoding="utf-8"))
    assert [e["key"] for e in data["entries"]] == ["0", "3", "2", "1"]
    assert "super-secret-value" not in path.read_text(encoding="utf-8")
    assert [p.name for p in path.parent.iterdir()] == ["c.json"]  # no temp file left
    path.write_text("changed by hand", encoding="utf-8")
    saved.save()
    assert path.read_text(encoding="utf-8") == "changed by hand"


def test_a_dropped_entry_is_gone_after_the_next_save(tmp_path: Path) -> None:
    path = cassette(tmp_path, entry(answer("fine"), key="good"), {"broken": True})
    loaded = Cassette.load(path)
    loaded.save()
    assert [e["key"] for e in json.loads(path.read_text())["entries"]] == ["good"]


def test_the_server_as_a_context_manager_listens_on_loopback_only_while_open(tmp_path: Path) -> None:
    with ProxyServer() as server:
        url = server.url
        assert url.startswith("http://127.0.0.1:")
        run = server.open_run("c", CacheSettings("record", tmp_path / "c.json"), {"openai": None})
        assert post(run.url_for("openai")).status_code == 502  # no recording, no endpoint
    assert "c" not in server.runs
    with pytest.raises(requests.ConnectionError):
        requests.post(url + "/r/c/u/openai/chat/completions", json=BODY, timeout=5)


def test_a_dead_endpoint_is_a_connection_reset_not_an_orderly_close(tmp_path: Path, server: ProxyServer) -> None:
    """An orderly close reads as "server disconnected", which clients retry; a reset is what a dead endpoint gives."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = server.open_run("z", CacheSettings("record", tmp_path / "c.json"), {"openai": f"http://127.0.0.1:{port}"})
    body = json.dumps(BODY).encode()
    path = run.url_for("openai").removeprefix(server.url) + PATH
    for _ in range(2):  # the first call finds it dead, the second meets the endpoint already down
        with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10) as conn:
            conn.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            with pytest.raises(ConnectionResetError):
                while conn.recv(4096):
                    pass
