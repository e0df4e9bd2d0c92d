"""Broken cassettes (merge conflicts, missing fields, recorded non-JSON, a file as dir): exit 2 or a clean miss."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from llmops_ci.core.errors import UsageError
from llmops_ci.llm.cache import LlmProxy
from llmops_ci.llm.cassette import CacheSettings, Cassette, request_key
from tests.conftest import CliResult, Project

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
GOOD = {"status": 200, "body": {"choices": [{"message": {"role": "assistant", "content": "ok"}}]}}


def _entry(response: Any, body: dict[str, Any] | None = None) -> dict[str, Any]:
    path = "/chat/completions"
    return {"key": request_key("openai", path, body or BODY), "upstream": "openai", "path": path,
            "request": body or BODY, "response": response}


def _cassette(tmp_path: Path, entries: list[Any]) -> Path:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"version": 1, "entries": entries}), encoding="utf-8")
    return path


def _replay(path: Path, *bodies: dict[str, Any]) -> list[requests.Response]:
    with LlmProxy(CacheSettings("replay", path), {"openai": None}) as proxy:
        return [requests.post(f"{proxy.url_for('openai')}/chat/completions", json=body, timeout=10)
                for body in bodies]


@pytest.mark.parametrize(("text", "says"), [
    ('{"version": 1, "entries": [\n<<<<<<< HEAD\n{}\n=======\n{}\n>>>>>>> branch\n]}\n', "merge-conflict markers"),
    ('{"version": 1, "entries": [', "not a readable cassette"),
    ("[]", "not a cassette"),
    ('{"entries": {"a": 1}}', "not a cassette"),
    ('{"entries": [' + "[" * 100_000 + "]" * 100_000 + "]}", "not a readable cassette"),
])
def test_unreadable_cassettes_name_the_file(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError) as err:
        Cassette.load(path)
    assert str(err.value).startswith(str(path)) and says in str(err.value)


@pytest.mark.parametrize("response", [
    None,  # the response field is missing
    {"status": 200, "body": "<html>gateway</html>"},  # a non-JSON 200, as older versions recorded it
    {"status": 200, "body": {"error": {"message": "<html>gateway</html>"}}},  # ... or wrapped as an error
    {"status": "200", "body": {}},
    {"status": 200, "stream": "data: x"},
    {"status": 200, "stream": [1, 2]},
])
def test_a_broken_entry_is_a_clean_miss(tmp_path: Path, response: Any, caplog: pytest.LogCaptureFixture) -> None:
    entry = _entry(response)
    if response is None:
        del entry["response"]
    other = _entry(GOOD, {**BODY, "messages": [{"role": "user", "content": "other"}]})
    path = _cassette(tmp_path, [entry, other, "junk", {"key": 5}])
    with caplog.at_level(logging.WARNING, logger="llmops_ci.llm_cache"):
        answer, good = _replay(path, BODY, other["request"])
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "llm_cache_miss"
    assert "entry 1 ignored" in caplog.text and "entry 3 ignored" in caplog.text
    assert good.json() == GOOD["body"]  # the good entry still replays


def test_llm_cache_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "cassettes").write_text("not a folder", encoding="utf-8")
    with pytest.raises(UsageError) as err:
        Cassette.load(tmp_path / "cassettes" / "flow.json")
    assert "llm_cache.dir is a file" in str(err.value)
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(UsageError):
        Cassette.load(tmp_path / "dir.json")


@pytest.fixture
def html_upstream() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            data = b"<html>captive portal</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_non_json_200_is_never_recorded(tmp_path: Path, html_upstream: str) -> None:
    path = tmp_path / "c.json"
    with LlmProxy(CacheSettings("record", path), {"openai": html_upstream}) as proxy:
        answer = requests.post(f"{proxy.url_for('openai')}/chat/completions", json=BODY, timeout=10)
    assert answer.status_code == 502 and "not a JSON object" in answer.json()["error"]["message"]
    assert proxy.stats.recorded == 0 and not path.exists()


def test_save_uses_a_unique_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    (tmp_path / "c.tmp").write_text("someone else's", encoding="utf-8")
    cassette = Cassette(path)
    cassette.put(_entry(GOOD))
    cassette.save()
    assert (tmp_path / "c.tmp").read_text(encoding="utf-8") == "someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.tmp"]
    assert Cassette.load(path).entries.keys() == cassette.entries.keys()


def test_batch_run_with_a_conflicted_cassette_exits_2(project: Callable[..., Project],
                                                       cli: Callable[..., CliResult]) -> None:
    proj = project({"cassettes/classify.json": '<<<<<<< HEAD\n{"version": 1, "entries": []}\n=======\n'})
    result = cli("batch-run", "--config", "llmops.yaml", "--flow", "classify", "--llm-cache", "replay")
    assert result.code == 2, result.err
    assert "cassettes/classify.json" in result.err and "merge-conflict" in result.err
    assert "Traceback" not in result.err
    assert proj.path("cassettes/classify.json").read_text(encoding="utf-8").startswith("<<<<<<<")
