"""The cassette file as a repository holds it: keys that stay valid across versions, a layout that diffs entry by
entry, saves that never leave half a file, and load errors that name the file and say what to do."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import requests

from llmops_ci.core.errors import UsageError
from llmops_ci.llm import cassette as llm_cassette
from llmops_ci.llm.cache import LlmProxy, ProxyServer
from llmops_ci.llm.cassette import CacheSettings, Cassette, request_key

AZURE_PATH = "/openai/deployments/gpt4o/chat/completions"
BODY = {"messages": [{"role": "user", "content": "Grüße, 東京"}], "temperature": 0}


def _entry(key: str, content: str = "ok", upstream: str = "azure", path: str = AZURE_PATH) -> dict[str, Any]:
    return {"key": key, "upstream": upstream, "path": path, "request": BODY,
            "response": {"status": 200, "body": {"choices": [{"message": {"content": content}}]}}}


def test_a_key_recorded_by_an_earlier_version_still_matches(tmp_path: Path) -> None:
    """Cassettes are committed: the key of a call (connection, path, canonical body) must not change between
    versions of llmops-ci, or every committed recording turns into a miss (this value is the current format)."""
    assert request_key("azure", AZURE_PATH, BODY) == "5e0e75b36e6db6d92e00d0eaec84fb84"
    assert request_key("azure", AZURE_PATH, dict(reversed(list(BODY.items())))) == request_key("azure", AZURE_PATH,
                                                                                               BODY)
    committed = tmp_path / "flow.json"
    committed.write_text(json.dumps({"version": 1, "entries": [_entry("5e0e75b36e6db6d92e00d0eaec84fb84", "Hallo")]}),
                         encoding="utf-8")
    with LlmProxy(CacheSettings("replay", committed), {"azure": None}) as proxy:
        answer = requests.post(f"{proxy.url_for('azure')}{AZURE_PATH}?api-version=2024-06-01", json=BODY, timeout=30)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "Hallo"


def test_the_saved_layout_is_one_field_per_line_sorted_and_readable(tmp_path: Path) -> None:
    """Sorted keys, one field per line and text as written (not \\u escapes): a re-recorded answer shows in review
    as a diff of its own lines only."""
    path = tmp_path / "flow.json"
    cassette = Cassette(path)
    cassette.put({"upstream": "openai", "path": "/chat/completions", "key": "k1", "request": {"b": 1, "a": "é"},
                  "response": {"status": 200, "body": {"text": "東京"}}})
    cassette.save()
    assert path.read_text(encoding="utf-8") == (
        '{\n "entries": [\n  {\n   "key": "k1",\n   "path": "/chat/completions",\n   "request": {\n    "a": "é",\n'
        '    "b": 1\n   },\n   "response": {\n    "body": {\n     "text": "東京"\n    },\n    "status": 200\n   },\n'
        '   "upstream": "openai"\n  }\n ],\n "version": 1\n}\n')


def test_save_creates_the_missing_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "flow.json"
    cassette = Cassette(path)
    cassette.put(_entry("k"))
    cassette.save()
    assert list(Cassette.load(path).entries) == ["k"]


def test_an_interrupted_save_keeps_the_old_cassette_and_leaves_no_temp_file(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The cassette is written to a hidden temp file beside it and renamed over it (a rename is atomic only within
    one file system); interrupted, the old cassette stays whole, the temp file goes and the interrupt goes on."""
    path = tmp_path / "cassettes" / "flow.json"
    path.parent.mkdir()
    path.write_text('{"version": 1, "entries": []}', encoding="utf-8")
    seen: list[tuple[Path, Path]] = []

    def interrupted(src: str, dst: str) -> None:
        seen.append((Path(src), Path(dst)))
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    cassette = Cassette.load(path)
    cassette.put(_entry("k"))
    with pytest.raises(KeyboardInterrupt):
        cassette.save()
    ((src, dst),) = seen
    assert dst == path and src.parent == path.parent
    assert src.name.startswith(".flow.json.") and src.name.endswith(".tmp")  # hidden, and never read as a cassette
    assert [p.name for p in path.parent.iterdir()] == ["flow.json"]
    assert path.read_text(encoding="utf-8") == '{"version": 1, "entries": []}' and cassette.dirty


def test_a_folder_where_the_cassette_should_be_is_named(tmp_path: Path) -> None:
    (tmp_path / "flow.json").mkdir()
    with pytest.raises(UsageError, match=r"flow\.json: a cassette must be a regular file; remove what is there"):
        Cassette.load(tmp_path / "flow.json")


def test_the_size_limit_is_inclusive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "flow.json"
    path.write_text('{"version": 1, "entries": []}', encoding="utf-8")
    size = path.stat().st_size
    monkeypatch.setattr(llm_cassette, "MAX_CASSETTE_BYTES", size)
    assert Cassette.load(path).entries == {}
    monkeypatch.setattr(llm_cassette, "MAX_CASSETTE_BYTES", size - 1)
    with pytest.raises(UsageError, match=rf"flow\.json: over {size - 1:,} bytes, too large for a cassette; delete it"):
        Cassette.load(path)


def test_a_cassette_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "flow.json"
    path.write_bytes(b'{"version": 1, "entries": [], "x": "\xff"}')
    with pytest.raises(UsageError, match=r"flow\.json: cannot read the cassette \(.*utf-8.*\); delete it and record"):
        Cassette.load(path)


def test_broken_json_without_conflict_markers_gets_the_plain_hint(tmp_path: Path) -> None:
    path = tmp_path / "flow.json"
    path.write_text('{"version": 1, "entries": [', encoding="utf-8")
    with pytest.raises(UsageError) as caught:
        Cassette.load(path)
    assert str(caught.value).endswith("delete it and record again with --llm-cache record")
    assert "merge-conflict" not in str(caught.value)


def test_a_dropped_entry_is_reported_with_its_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "flow.json"
    path.write_text(json.dumps({"entries": [_entry("good"), {"key": "bad"}]}), encoding="utf-8")
    caplog.set_level(logging.WARNING, "llmops_ci.llm_cache")
    assert list(Cassette.load(path).entries) == ["good"]
    (record,) = caplog.records
    assert record.getMessage().endswith("flow.json: entry 2 ignored (no 'upstream'); that call will be recorded again")


def test_closing_a_run_twice_is_harmless(tmp_path: Path) -> None:
    """A run closed by its step and again when the server stops (or by a second cleanup path) saves once, no error."""
    with ProxyServer() as server:
        run = server.open_run("t", CacheSettings("record", tmp_path / "c.json"), {"openai": None})
        run.cassette.put(_entry("k"))
        run.close()
        run.close()
        assert "t" not in server.runs
    assert list(Cassette.load(tmp_path / "c.json").entries) == ["k"]
