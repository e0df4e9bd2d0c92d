"""Which cassette entries a change added or altered, against the base branch; which base the CI names."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from llmops_ci.core.errors import UsageError
from llmops_ci.llm.cassette_diff import CacheBase, provenance, resolve_base, target_ref
from tests.project.test_changes import commit, git, init_repo


@pytest.fixture(autouse=True)
def _isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))


def _entry(key: str, answer: str, **more: object) -> dict[str, object]:
    return {"key": key, "upstream": "openai", "path": "/chat/completions", "request": {"q": key},
            "response": {"status": 200, "body": {"answer": answer}}, **more}


def _write(path: Path, *entries: object, indent: int | None = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "entries": list(entries)}, indent=indent), encoding="utf-8")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    init_repo(root)
    _write(root / "cassettes" / "f.json", _entry("a", "A"), _entry("b", "B"))
    commit(root, "base")
    git(root, "checkout", "-q", "-b", "change")
    return root


def _base(root: Path, base_only: bool = False) -> CacheBase:
    found = resolve_base("main", {}, root, base_only=base_only)
    assert found is not None
    return found


def test_entries_as_on_the_base_whatever_their_layout_are_the_same(repo: Path) -> None:
    cassette = repo / "cassettes" / "f.json"
    b = _entry("b", "B")
    reordered = {k: b[k] for k in reversed(list(b))}
    _write(cassette, _entry("a", "A", recorded_at="later"), reordered, _entry("c", "C"), {"key": 5}, "junk",
           indent=None)
    base = _base(repo)
    prov = provenance(cassette, base)
    assert prov.same == frozenset({"a", "b"}) and prov.changed == frozenset({"c"})
    assert prov.base == base.commit == git(repo, "rev-parse", "main") and prov.base_only is False
    _write(cassette, _entry("a", "A2"), _entry("b", "B"))
    assert provenance(cassette, _base(repo, base_only=True)) == type(prov)(base.commit, frozenset({"a"}),
                                                                          frozenset({"b"}), True)


@pytest.mark.parametrize("text", ["{broken", '{"entries": {"a": 1}}', "[1, 2]", '{"version": 1}'])
def test_a_cassette_that_is_no_cassette_has_no_entries(repo: Path, text: str) -> None:
    cassette = repo / "cassettes" / "f.json"
    cassette.write_text(text, encoding="utf-8")
    prov = provenance(cassette, _base(repo))
    assert prov.same == frozenset() and prov.changed == frozenset()


def test_a_base_without_the_cassette_or_a_cassette_outside_the_repository(repo: Path, tmp_path: Path) -> None:
    new = repo / "cassettes" / "new.json"
    _write(new, _entry("a", "A"))
    assert provenance(new, _base(repo)).changed == frozenset({"a"})
    outside = tmp_path / "elsewhere" / "f.json"
    _write(outside, _entry("a", "A"))
    assert provenance(outside, _base(repo)).changed == frozenset({"a"})
    assert provenance(repo / "cassettes" / "missing.json", _base(repo)).changed == frozenset()
    binary = repo / "cassettes" / "bin.json"
    binary.write_bytes(b"\xff\xfe")
    assert provenance(binary, _base(repo)).changed == frozenset()


def test_a_base_whose_cassette_is_not_utf8_is_still_read(repo: Path) -> None:
    cassette = repo / "cassettes" / "f.json"
    cassette.write_bytes(json.dumps({"entries": [_entry("a", "A#")]}).encode().replace(b"A#", b"A\xff"))
    commit(repo, "odd bytes")
    git(repo, "branch", "-f", "main")
    _write(cassette, _entry("a", "A\ufffd"))  # what the base's stray byte reads as
    assert provenance(cassette, _base(repo)).same == frozenset({"a"})


@pytest.mark.parametrize(("environ", "ref"), [
    ({"GITHUB_BASE_REF": "main"}, "main"),
    ({"SYSTEM_PULLREQUEST_TARGETBRANCH": "refs/heads/release "}, "release"),
    ({"GITHUB_BASE_REF": "", "SYSTEM_PULLREQUEST_TARGETBRANCH": "dev"}, "dev"),
    ({"GITHUB_BASE_REF": "  "}, None),
    ({}, None),
])
def test_the_target_branch_as_the_ci_names_it(environ: dict[str, str], ref: str | None) -> None:
    assert target_ref(environ) == ref


def test_the_base_from_the_ci_tries_the_remote_then_the_branch(repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    found = resolve_base(None, {"GITHUB_BASE_REF": "main"}, repo / "cassettes")
    assert found is not None and (found.ref, found.top) == ("main", Path(os.path.realpath(repo)))
    git(repo, "update-ref", "refs/remotes/origin/main", "main")
    found = resolve_base(None, {"GITHUB_BASE_REF": "main"}, repo)
    assert found is not None and found.ref == "origin/main" and found.base_only is False
    assert resolve_base(None, {}, repo) is None
    caplog.set_level(logging.WARNING, "llmops_ci.llm_cache")
    assert resolve_base("nope", {}, repo) is None and "cannot find the base nope in git" in caplog.text
    assert resolve_base("-x", {}, repo) is None
    with pytest.raises(UsageError, match="--llm-cache-base-only needs the base branch"):
        resolve_base("-x", {}, repo, base_only=True)
    with pytest.raises(UsageError, match="--llm-cache-base-only needs the base branch"):
        resolve_base(None, {}, repo, base_only=True)


def test_outside_a_repository_there_is_no_base(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    caplog.set_level(logging.WARNING, "llmops_ci.llm_cache")
    assert resolve_base("main", {}, folder) is None
    assert "cannot find the base main in git" in caplog.text


@pytest.mark.parametrize("failure", [FileNotFoundError(2, "No such file or directory: 'git'"),
                                     __import__("subprocess").TimeoutExpired(["git"], 60)])
def test_git_missing_or_hanging_means_no_base_not_a_crash(repo: Path, failure: Exception,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """git absent from the machine, or not answering within its time: the base cannot be told, so provenance is
    not reported (never a crash, never a false 0), and --llm-cache-base-only says what it needs (exit 2)."""
    import subprocess

    from llmops_ci.llm import cassette_diff

    calls: list[list[str]] = []

    def broken(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        calls.append(cmd)
        assert kwargs.get("timeout") == 60 and kwargs.get("check") is False and kwargs.get("capture_output")
        raise failure

    monkeypatch.setattr(cassette_diff.subprocess, "run", broken)
    proc = cassette_diff._git(repo, "rev-parse", "--show-toplevel")
    assert (proc.returncode, proc.stdout, proc.args) == (1, b"", ["git", "rev-parse", "--show-toplevel"])
    assert str(failure).encode() == proc.stderr
    with caplog.at_level(logging.WARNING):
        assert resolve_base("main", {}, repo) is None
    assert "cannot find the base main in git" in caplog.text
    assert calls[-1] == ["git", "rev-parse", "--show-toplevel"]  # stopped after git could not name the top
    with pytest.raises(UsageError, match="--llm-cache-base-only needs the base branch"):
        resolve_base("main", {}, repo, base_only=True)
