"""The record/replay proxy at the HTTP level: plain and streamed calls, misses, and no secrets on disk."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from llmops_ci.llm.cache import LINE_HEADER, LlmProxy, ProxyServer
from llmops_ci.llm.cassette import CacheSettings, request_key
from tests.fakes.openai import FakeOpenAI

KEY = "sk-live-" + "s" * 30
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}


def call(proxy: LlmProxy, body: dict, name: str = "openai", stream: bool = False) -> requests.Response:
    return requests.post(f"{proxy.url_for(name)}/chat/completions", json={**body, "stream": stream},
                         headers={"Authorization": f"Bearer {KEY}"}, stream=stream, timeout=10)


def proxy(tmp_path: Path, mode: str, upstream: FakeOpenAI | None) -> LlmProxy:
    return LlmProxy(CacheSettings(mode, tmp_path / "cassettes" / "flow.json"),
                    {"openai": upstream.url + "/v1" if upstream else None})


def test_record_then_replay_without_upstream(tmp_path: Path, upstream: FakeOpenAI) -> None:
    with proxy(tmp_path, "record", upstream) as p:
        recorded = call(p, BODY).json()
    assert p.stats.recorded == 1 and len(upstream.requests) == 1
    assert upstream.requests[0]["authorization"]  # the key was forwarded, not stored
    text = (tmp_path / "cassettes" / "flow.json").read_text()
    assert KEY not in text and "Bearer" not in text
    with proxy(tmp_path, "replay", None) as p:
        replayed = call(p, BODY).json()
    assert replayed == recorded
    assert (p.stats.hits, p.stats.misses, p.stats.tokens_saved) == (1, 0, recorded["usage"]["total_tokens"])
    assert len(upstream.requests) == 1


def test_streams_replay_as_streams(tmp_path: Path, upstream: FakeOpenAI) -> None:
    with proxy(tmp_path, "record", upstream) as p:
        live = call(p, BODY, stream=True)
        live_events = [line for line in live.iter_lines(decode_unicode=True) if line]
    with proxy(tmp_path, "replay", None) as p:
        again = call(p, BODY, stream=True)
        assert again.headers["Content-Type"] == "text/event-stream"
        replay_events = [line for line in again.iter_lines(decode_unicode=True) if line]
    assert replay_events == live_events
    assert live_events[-1] == "data: [DONE]" and len(live_events) > 3


def test_replay_miss_is_a_clear_error(tmp_path: Path) -> None:
    with proxy(tmp_path, "replay", None) as p:
        response = call(p, BODY)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "no recording of this call to connection 'openai'" in message and "--llm-cache record" in message
    assert p.stats.misses == 1


def test_auto_replays_hits_and_records_misses(tmp_path: Path, upstream: FakeOpenAI) -> None:
    with proxy(tmp_path, "record", upstream) as p:
        call(p, BODY)
    other = {**BODY, "messages": [{"role": "user", "content": "something new"}]}
    with proxy(tmp_path, "auto", upstream) as p:
        call(p, BODY)
        call(p, other)
    assert (p.stats.hits, p.stats.misses, p.stats.recorded) == (1, 1, 1)
    assert len(upstream.requests) == 2
    entries = json.loads((tmp_path / "cassettes" / "flow.json").read_text())["entries"]
    assert len(entries) == 2 and [e["key"] for e in entries] == sorted(e["key"] for e in entries)


def test_auto_miss_without_endpoint(tmp_path: Path) -> None:
    with proxy(tmp_path, "auto", None) as p:
        response = call(p, BODY)
    assert response.status_code == 502 and "no endpoint to record it from" in response.json()["error"]["message"]


def test_key_ignores_everything_but_connection_path_and_body() -> None:
    a = request_key("openai", "/chat/completions", {"b": 1, "a": [1, 2]})
    assert a == request_key("openai", "/chat/completions", {"a": [1, 2], "b": 1})
    assert a != request_key("other", "/chat/completions", {"a": [1, 2], "b": 1})
    assert a != request_key("openai", "/openai/deployments/x/chat/completions", {"a": [1, 2], "b": 1})


def test_azure_path_is_forwarded_with_query(tmp_path: Path, upstream: FakeOpenAI) -> None:
    with LlmProxy(CacheSettings("record", tmp_path / "c.json"), {"aoai": upstream.url}) as p:
        response = requests.post(f"{p.url_for('aoai')}/openai/deployments/gpt4/chat/completions?api-version=2024-06-01",
                                 json=BODY, headers={"api-key": KEY}, timeout=10)
    assert response.ok and upstream.requests[0]["path"].endswith("/openai/deployments/gpt4/chat/completions"
                                                                  "?api-version=2024-06-01")
    assert KEY not in (tmp_path / "c.json").read_text()


def events(response: requests.Response) -> list[dict]:
    out = []
    for line in response.iter_lines(decode_unicode=True):
        if line and line != "data: [DONE]":
            chunk = json.loads(line.removeprefix("data: "))
            chunk.pop("id"), chunk.pop("created")
            out.append(chunk)
    return out


def test_streamed_calls_count_tokens_when_the_client_does_not_ask(tmp_path: Path, upstream: FakeOpenAI) -> None:
    # upstream flex-flows/chat-stream: prompt flow's prompty streams without stream_options; OpenAI sends usage only
    # when asked (stream_options.include_usage: an extra last chunk with empty choices, "usage": null on the others)
    direct = requests.post(f"{upstream.url}/v1/chat/completions", json={**BODY, "stream": True}, stream=True,
                           timeout=10)
    expected = events(direct)
    server = ProxyServer().start()
    try:
        run = server.open_run("run-a", CacheSettings("record", tmp_path / "a.json"), {"openai": upstream.url + "/v1"})
        got = requests.post(f"{run.url_for('openai')}/chat/completions", json={**BODY, "stream": True}, stream=True,
                            headers={LINE_HEADER: "run-a|3"}, timeout=10)
        assert events(got) == expected  # what the client sees is what it asked for
        assert upstream.requests[-1]["body"]["stream_options"] == {"include_usage": True}
        assert run.tokens(3) == {"prompt": 2, "completion": 3, "total": 5}
        run.close()
        replay = server.open_run("run-b", CacheSettings("replay", tmp_path / "a.json"), {"openai": None})
        again = requests.post(f"{replay.url_for('openai')}/chat/completions", json={**BODY, "stream": True},
                              stream=True, headers={LINE_HEADER: "run-b|0"}, timeout=10)
        assert events(again) == expected
        assert replay.tokens(0) == {"prompt": 2, "completion": 3, "total": 5}
    finally:
        server.stop()


def test_a_connection_stored_for_every_run_routes_by_the_line_header(tmp_path: Path, upstream: FakeOpenAI) -> None:
    # two flex flows with init model_config {connection: openai} side by side: the store holds one URL for
    # 'openai'; each call belongs to the run whose line makes it, never to whichever run stored it last
    server = ProxyServer().start()
    try:
        runs = {tag: server.open_run(tag, CacheSettings("record", tmp_path / f"{tag}.json"),
                                     {"openai": upstream.url + "/v1"}) for tag in ("flow-a", "flow-b")}
        assert runs["flow-a"].shared_url("openai") == runs["flow-b"].shared_url("openai")
        url = runs["flow-a"].shared_url("openai") + "/chat/completions"
        for tag, line, text in (("flow-a", 0, "one"), ("flow-b", 0, "two words"), ("flow-b", 1, "three more words")):
            body = {**BODY, "messages": [{"role": "user", "content": text}]}
            assert requests.post(url, json=body, headers={LINE_HEADER: f"{tag}|{line}"}, timeout=10).ok
        assert [runs["flow-a"].tokens(0), runs["flow-a"].tokens(1)] == [{"prompt": 1, "completion": 2, "total": 3},
                                                                          None]
        assert runs["flow-b"].tokens(1) == {"prompt": 3, "completion": 4, "total": 7}
        assert (runs["flow-a"].stats.recorded, runs["flow-b"].stats.recorded) == (1, 2)
        runs["flow-a"].close()  # one run ending never breaks the other's calls
        assert requests.post(url, json=BODY, headers={LINE_HEADER: "flow-b|2"}, timeout=10).ok
        lost = requests.post(url, json=BODY, headers={LINE_HEADER: "flow-a|1"}, timeout=10)
        assert lost.status_code == 404 and "outside a run's line" in lost.json()["error"]["message"]
        # a client the executor cannot tag: the only run open, counted for the run (not a line)
        assert requests.post(url, json=BODY, timeout=10).ok
        assert runs["flow-b"].stats.recorded == 4
    finally:
        server.stop()
