"""Which base the cassettes are compared with, as the CI and git leave it: the cases a pull request could abuse or a
checkout could get wrong (no pull request, a branch name that reads as a git option, git answering oddly)."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from llmops_ci.llm import cassette_diff
from llmops_ci.llm.cassette_diff import resolve_base


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """main with one commit, checked out on 'change' with one more: the base of 'change' is main's commit."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "symbolic-ref", "HEAD", "refs/heads/main")
    for name, value in (("user.name", "Test"), ("user.email", "test@example.com"), ("commit.gpgsign", "false")):
        _git(root, "config", name, value)
    (root / "a.txt").write_text("base\n", encoding="utf-8")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "base")
    _git(root, "checkout", "-q", "-b", "change")
    (root / "a.txt").write_text("changed\n", encoding="utf-8")
    _git(root, "commit", "-q", "-am", "change")
    return root


def test_outside_a_pull_request_git_is_not_asked_and_nothing_is_warned(
        repo: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A push build (no target branch, no --changed-since) has no base: quietly, without running git."""
    calls: list[tuple[str, ...]] = []
    real = cassette_diff._git

    def counted(top: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
        calls.append(args)
        return real(top, *args)

    monkeypatch.setattr(cassette_diff, "_git", counted)
    caplog.set_level(logging.DEBUG, "llmops_ci.llm_cache")
    assert resolve_base(None, {"GITHUB_BASE_REF": "", "SYSTEM_PULLREQUEST_TARGETBRANCH": " "}, repo) is None
    assert calls == [] and caplog.records == []


@pytest.mark.parametrize("how", ["changed_since", "ci"])
def test_a_base_named_like_a_git_option_is_never_passed_to_git(repo: Path, how: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """``git merge-base --independent HEAD`` prints HEAD itself: taken as the base, every answer the change recorded
    would count as the base branch's. A pull request chooses its target branch's name, so such a ref is no base."""
    assert _git(repo, "merge-base", "--independent", "HEAD") == _git(repo, "rev-parse", "HEAD")  # the danger
    caplog.set_level(logging.WARNING, "llmops_ci.llm_cache")
    if how == "changed_since":
        assert resolve_base("--independent", {}, repo) is None
    else:
        assert resolve_base(None, {"GITHUB_BASE_REF": "--independent"}, repo) is None
    assert "cannot find the base" in caplog.text
    with pytest.raises(cassette_diff.UsageError):
        resolve_base("--independent", {}, repo, base_only=True)


def test_the_base_is_the_merge_base_not_the_branch_tip(repo: Path) -> None:
    _git(repo, "checkout", "-q", "main")
    (repo / "b.txt").write_text("main moved on\n", encoding="utf-8")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "main moves on")
    _git(repo, "checkout", "-q", "change")
    found = resolve_base("main", {}, repo)
    assert found is not None and found.commit == _git(repo, "merge-base", "main", "HEAD")
    assert found.commit != _git(repo, "rev-parse", "main") and found.ref == "main" and found.base_only is False


@pytest.mark.parametrize(("returncode", "stdout"), [(0, b"\n"), (1, b"0123abcd\n"), (128, b"fatal-ish\n")])
def test_git_answering_no_commit_is_no_base(repo: Path, monkeypatch: pytest.MonkeyPatch, returncode: int,
                                            stdout: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """merge-base either succeeds and names a commit, or there is no base: an empty answer, or output from a failed
    call, is never taken as a commit (the cassettes would be compared with nothing, or with garbage)."""
    real = subprocess.run

    def fake(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        if cmd[1] == "merge-base":
            return subprocess.CompletedProcess(cmd, returncode, stdout, b"")
        return real(cmd, **kwargs)

    monkeypatch.setattr(cassette_diff.subprocess, "run", fake)
    caplog.set_level(logging.WARNING, "llmops_ci.llm_cache")
    assert resolve_base("main", {}, repo) is None
    assert resolve_base(None, {"GITHUB_BASE_REF": "main"}, repo) is None
    assert "cannot find the base origin/main or main in git" in caplog.text
