"""What a verdict rests on: replayed answers recorded in the change, replaying only the base's, cassettes as inputs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from llmops_ci.core.errors import UsageError
from llmops_ci.llm.cache import LlmProxy
from llmops_ci.llm.cassette import CacheSettings
from llmops_ci.llm.cassette_diff import provenance, resolve_base
from llmops_ci.report.comment import render
from llmops_ci.results.summary import Summary
from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import Project
from tests.project.test_changes import commit, git, init_repo, load, repo, select  # noqa: F401  (fixtures)

A, B, C = ({"model": "m", "messages": [{"role": "user", "content": text}]} for text in ("a", "b", "c"))


@pytest.fixture(autouse=True)
def _isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


def _call(proxy: LlmProxy, body: dict) -> requests.Response:
    return requests.post(f"{proxy.url_for('openai')}/chat/completions", json=body, timeout=10)


def _record(cassette: Path, upstream: FakeOpenAI, *bodies: dict) -> None:
    with LlmProxy(CacheSettings("auto", cassette), {"openai": upstream.url + "/v1"}) as proxy:
        for body in bodies:
            assert _call(proxy, body).status_code == 200


@pytest.fixture
def rerecorded(tmp_path: Path, upstream: FakeOpenAI) -> Path:
    """A repository whose base branch recorded A and B; the change altered B's answer and recorded C."""
    root = tmp_path / "repo"
    root.mkdir()
    init_repo(root)
    cassette = root / "cassettes" / "classify.json"
    _record(cassette, upstream, A, B)
    commit(root, "base")
    git(root, "checkout", "-q", "-b", "change")
    _record(cassette, upstream, C)
    data = json.loads(cassette.read_text())
    for entry in data["entries"]:
        if "\"b\"" in json.dumps(entry):
            entry["response"]["body"]["choices"][0]["message"]["content"] = "a stand-in model's answer"
    cassette.write_text(json.dumps(data))
    commit(root, "re-record")
    return cassette


def test_replayed_answers_recorded_in_the_change_are_counted(rerecorded: Path) -> None:
    base = resolve_base("main", {}, rerecorded.parent)
    assert base is not None
    settings = CacheSettings("replay", rerecorded, provenance(rerecorded, base))
    with LlmProxy(settings, {"openai": None}) as proxy:
        answers = [_call(proxy, body) for body in (A, B, C)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert proxy.stats.to_json()["recorded_in_change"] == 2 and proxy.stats.hits == 3


def test_base_only_replays_what_the_base_branch_holds(rerecorded: Path) -> None:
    base = resolve_base("main", {}, rerecorded.parent, base_only=True)
    assert base is not None
    with LlmProxy(CacheSettings("replay", rerecorded, provenance(rerecorded, base)), {"openai": None}) as proxy:
        answers = [_call(proxy, body) for body in (A, B, C)]
    assert [a.status_code for a in answers] == [200, 400, 400]  # B was altered, C is new: misses
    assert (proxy.stats.hits, proxy.stats.misses, proxy.stats.recorded_in_change) == (1, 2, 0)


def test_the_ci_target_branch_is_the_default_base(rerecorded: Path) -> None:
    for environ in ({"GITHUB_BASE_REF": "main"}, {"SYSTEM_PULLREQUEST_TARGETBRANCH": "refs/heads/main"}):
        base = resolve_base(None, environ, rerecorded.parent)
        assert base is not None and base.ref == "main"  # origin/main does not exist here: the branch itself
    assert resolve_base(None, {}, rerecorded.parent) is None  # no base: not reported, never a false 0
    with pytest.raises(UsageError, match="--changed-since"):
        resolve_base(None, {}, rerecorded.parent, base_only=True)


def test_no_base_means_no_count(tmp_path: Path, upstream: FakeOpenAI) -> None:
    _record(tmp_path / "c.json", upstream, A)
    with LlmProxy(CacheSettings("replay", tmp_path / "c.json"), {"openai": None}) as proxy:
        _call(proxy, A)
    assert "recorded_in_change" not in proxy.stats.to_json()


def test_the_comment_says_when_answers_were_recorded_in_the_change() -> None:
    def summary(changed: int) -> dict:
        return {"schema": "llmops-ci/summary@1", "flows": {"classify": {"run": {
            "name": "r", "status": "completed", "lines_total": 3, "lines_failed": 0,
            "llm_cache": {"mode": "replay", "hits": 3, "misses": 0, "recorded_in_change": changed}}}}}
    assert "2 of 3 replayed answers were recorded or altered in this change" in render(Summary.parse(summary(2)))
    assert "recorded or altered in this change" not in render(Summary.parse(summary(0)))


def test_a_re_recorded_cassette_selects_its_flow(repo: Callable[..., Project]) -> None:  # noqa: F811
    proj = repo({"cassettes/classify.json": '{"version": 1, "entries": []}\n',
                 "cassettes/classify.accuracy.json": '{"version": 1, "entries": []}\n'})
    proj.write("cassettes/classify.json", '{"version": 1, "entries": [{"key": "k"}]}\n')
    commit(proj.root)
    result = select(proj)
    assert result.selected == ["classify"]
    assert result.reasons["classify"] == ["cassettes/classify.json changed (LLM cassette)"]
    proj.write("cassettes/classify.accuracy.json", '{"version": 1, "entries": [{"key": "k"}]}\n')
    proj.write("cassettes/classify.json", '{"version": 1, "entries": []}\n')
    commit(proj.root)
    assert select(proj).reasons["classify"] == [
        "cassettes/classify.accuracy.json changed (LLM cassette of evaluation accuracy)"]


@pytest.mark.executor
def test_a_re_recorded_answer_shows_in_summary_and_comment(project: Callable[..., Project], cli: Callable[..., Any],
                                                          run_env: FakeOpenAI) -> None:
    from tests.engines.test_prompty_local import FILES, model

    run_env.answer = model
    proj = project(FILES, base=False)
    init_repo(proj.root)
    for step in ("batch-run", "eval-run"):
        assert cli(step, "--flow", "summarize", "--llm-cache", "record", "--state-dir", "rec").code == 0
    proj.write(".gitignore", "rec/\ns*/\n")
    commit(proj.root, "base")
    git(proj.root, "checkout", "-q", "-b", "change")
    cassette = proj.path("cassettes/summarize.json")
    data = json.loads(cassette.read_text())
    data["entries"][0]["response"]["body"]["choices"][0]["message"]["content"] = "Movie"  # a stand-in's answer
    cassette.write_text(json.dumps(data))
    judge = proj.path("cassettes/summarize.judge.json")
    data = json.loads(judge.read_text())
    for entry in data["entries"]:  # every judge answer re-written by hand
        entry["response"]["body"]["choices"][0]["message"]["content"] = '{"score": 1, "reason": "trust me"}'
    judge.write_text(json.dumps(data))
    commit(proj.root, "re-record")
    for step in ("batch-run", "eval-run"):
        result = cli(step, "--llm-cache", "replay", "--changed-since", "main", "--state-dir", "s1")
        assert result.code == 0, result.err
    flow = json.loads(proj.read("s1/summary.json"))["flows"]["summarize"]
    cache = flow["run"]["llm_cache"]
    assert (cache["hits"], cache["recorded_in_change"]) == (2, 1)
    judged = flow["evaluations"]["judge"]["llm_cache"]
    assert judged["hits"] > 0 and judged["recorded_in_change"] == judged["hits"]
    comment = cli("comment", "--platform", "local", "--state-dir", "s1")
    assert "1 of 2 replayed answers were recorded or altered in this change" in comment.out
    assert "summarize/judge" in comment.out
    result = cli("batch-run", "--flow", "summarize", "--llm-cache", "replay", "--changed-since", "main",
                 "--llm-cache-base-only", "--state-dir", "s2")
    cache = json.loads(proj.read("s2/summary.json"))["flows"]["summarize"]["run"]["llm_cache"]
    assert (cache["hits"], cache["misses"], cache["recorded_in_change"]) == (1, 2, 0)
