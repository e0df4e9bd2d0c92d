"""The proxy server's life (start, stop, side by side, left open at exit), which line a call counts for, repeats,
and what mode ``off`` and a miss without an endpoint look like to the client."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from llmops_ci.llm import cache as llm_cache
from llmops_ci.llm.cache import LINE_HEADER, LlmProxy, ProxyServer
from llmops_ci.llm.cassette import CacheSettings, request_key
from tests.fakes.openai import FakeOpenAI

PATH = "/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}


def post(url: str, line: str | None = None, body: dict[str, Any] | None = None) -> requests.Response:
    return requests.post(f"{url}{PATH}", json=body or BODY, headers={LINE_HEADER: line} if line else {}, timeout=30)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the server's life --------------------------------------------------------------------------------------------

def test_stopping_a_server_never_started_or_stopped_twice_is_harmless() -> None:
    """Cleanup paths stop the proxy whatever happened before (a step that failed before it started, or twice)."""
    ProxyServer().stop()
    server = ProxyServer().start()
    server.stop()
    server.stop()


def test_two_servers_run_side_by_side_on_free_ports(tmp_path: Path) -> None:
    with ProxyServer() as one, ProxyServer() as two:
        assert one.url != two.url
        for proxy in (one, two):
            run = proxy.open_run("t", CacheSettings("record", tmp_path / f"{id(proxy)}.json"), {"openai": None})
            assert post(run.url_for("openai")).status_code == 502  # answered (no endpoint): it listens


def test_a_proxy_left_open_does_not_keep_the_process_alive() -> None:
    """A step that crashes before closing its proxy must still end (the CI job would hang until its own timeout)."""
    root = Path(llm_cache.__file__).resolve().parents[2]
    code = "from llmops_ci.llm.cache import ProxyServer; ProxyServer().start(); print('started')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.strip() == "started", proc.stderr
    ProxyServer().start().stop()  # in this process too, so tools that pick tests by what they call pick this one


def test_an_https_endpoint_is_called_and_its_failure_kept(tmp_path: Path, server: ProxyServer) -> None:
    """Real endpoints are https: the default session carries https as it does http."""
    run = server.open_run("h", CacheSettings("record", tmp_path / "c.json"), {"openai": f"https://127.0.0.1:{_closed_port()}"})
    with pytest.raises(requests.ConnectionError):
        post(run.url_for("openai"), "h|2")
    assert run.failure(2) == "connection refused"


# --- the request as it arrives ------------------------------------------------------------------------------------

def test_a_call_without_a_body_is_answered_at_once(tmp_path: Path, server: ProxyServer) -> None:
    run = server.open_run("b", CacheSettings("replay", tmp_path / "c.json"), {"openai": None})
    path = run.url_for("openai").removeprefix(server.url) + PATH
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ") and b"llm_cache_miss" in answer  # an empty body: a miss, no hang


def test_the_whole_query_reaches_the_endpoint(tmp_path: Path, upstream: FakeOpenAI) -> None:
    with LlmProxy(CacheSettings("record", tmp_path / "c.json"), {"azure": upstream.url}) as proxy:
        url = f"{proxy.url_for('azure')}/openai/deployments/d{PATH}?api-version=2024-06-01&note=why?"
        assert requests.post(url, json=BODY, timeout=30).ok
    assert upstream.requests[0]["path"] == f"/openai/deployments/d{PATH}?api-version=2024-06-01&note=why?"


def test_a_late_call_from_a_closed_runs_line_counts_for_no_line_of_another_run(tmp_path: Path,
                                                                           upstream: FakeOpenAI) -> None:
    """Endpoints read from the environment go to the only open run; a call tagged with another run's line still
    lands there (it has nowhere else to go) but is not counted as a line of this run."""
    server = ProxyServer(env_upstreams={"OPENAI_BASE_URL": upstream.url + "/v1"}).start()
    try:
        one = server.open_run("one", CacheSettings("record", tmp_path / "1.json"), {})
        one.close()
        two = server.open_run("two", CacheSettings("record", tmp_path / "2.json"), {})
        assert post(server.env_url("OPENAI_BASE_URL"), "one|3").ok
        assert two.tokens(3) is None and two.usage[None].total == 5
    finally:
        server.stop()


# --- repeats ------------------------------------------------------------------------------------------------------

def _repeats_cassette(tmp_path: Path, answers: list[str]) -> Path:
    key = request_key("openai", PATH, BODY)
    entries = [{"key": key if i == 0 else f"{key}#{i}", "upstream": "openai", "path": PATH, "request": BODY,
                "response": {"status": 200, "body": {"choices": [{"message": {"content": a}}]}}}
               for i, a in enumerate(answers)]
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"version": 1, "entries": entries}), encoding="utf-8")
    return path


def _content(response: requests.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


def test_two_repeats_replay_their_own_answers(tmp_path: Path, server: ProxyServer) -> None:
    run = server.open_run("r", CacheSettings("replay", _repeats_cassette(tmp_path, ["a", "b"]), repeats=2),
                          {"openai": None})
    assert [_content(post(run.url_for("openai"), f"r|{i}")) for i in range(4)] == ["a", "b", "a", "b"]


def test_a_tagged_repeat_replays_its_own_answer_in_any_order(tmp_path: Path, server: ProxyServer) -> None:
    """Lines run in parallel finish in any order: the line number, not the order of calls, picks the repeat."""
    run = server.open_run("r", CacheSettings("replay", _repeats_cassette(tmp_path, ["a", "b", "c"]), repeats=3),
                          {"openai": None})
    assert [_content(post(run.url_for("openai"), f"r|{i}")) for i in (2, 0, 1, 5)] == ["c", "a", "b", "c"]


# --- off, and a miss with no endpoint -----------------------------------------------------------------------------

def test_mode_off_never_reads_the_cassette(tmp_path: Path, upstream: FakeOpenAI) -> None:
    """With the cache off, a cassette left in a conflicted state does not matter: it is neither read nor written."""
    path = tmp_path / "c.json"
    path.write_text("<<<<<<< HEAD\n{}\n=======\n", encoding="utf-8")
    with LlmProxy(CacheSettings("off", path), {"openai": upstream.url + "/v1"}) as proxy:
        assert post(proxy.url_for("openai")).ok
    assert path.read_text(encoding="utf-8").startswith("<<<<<<<")


def test_a_miss_with_no_endpoint_to_record_from_is_a_cache_miss_error(tmp_path: Path, server: ProxyServer) -> None:
    run = server.open_run("m", CacheSettings("auto", tmp_path / "c.json"), {"gpt": None})
    response = post(run.url_for("gpt"), "m|0")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "llm_cache_miss" and error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"llmops-ci cache: no recording of this call to 'gpt' ({PATH})")
    assert run.stats.misses == 1
