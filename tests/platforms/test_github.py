"""The GitHub client and platform against a loopback GitHub API (pagination, identity, failures)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from llmops_ci.core.http import Http
from llmops_ci.platforms import Publication
from llmops_ci.platforms.github import GitHub
from llmops_ci.platforms.github_api import GitHubComments
from llmops_ci.report.comment import MARKER
from llmops_ci.results.summary import Summary
from tests.fakes.github import FakeGitHub
from tests.helpers.projects import CliResult

SUMMARY = {"schema": "llmops-ci/summary@1", "lint": {"findings": [
    {"rule": "node-ref-unknown" if i % 2 else "input-unused", "severity": "error" if i % 2 else "warning",
     "path": "flows/a/flow.dag.yaml", "line": i + 1, "column": 2, "message": f"finding {i}, with: punctuation"}
    for i in range(30)]}}


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as server:
        yield server


@pytest.fixture
def http() -> Http:
    waits: list[float] = []
    return Http(requests.Session(), sleep=waits.append)


def client(server: FakeGitHub, http: Http) -> GitHubComments:
    return GitHubComments(http, server.url, server.token, f"{server.owner}/{server.repo}")


def test_our_comment_on_page_2_of_250_is_edited_not_duplicated(github: FakeGitHub, http: Http) -> None:
    for i in range(250):
        if i == 130:
            github.add_comment(7, f"{MARKER}\nold report", "github-actions[bot]")
        else:
            github.add_comment(7, f"comment {i}", "someone")
    url, action = client(github, http).upsert(7, f"{MARKER}\nnew report")
    assert action == "updated"
    assert len(github.comments[7]) == 250
    assert github.bodies(7)[130] == f"{MARKER}\nnew report"
    pages = [r.query.get("page", "1") for r in github.requests if r.method == "GET" and r.path.endswith("/comments")]
    assert pages == ["1", "2", "3"]
    assert url.endswith(f"#issuecomment-{github.comments[7][130]['id']}")


def test_marker_in_another_users_comment_is_ignored(github: FakeGitHub, http: Http) -> None:
    github.add_comment(7, f"{MARKER}\nforged by a user", "mallory")
    _, action = client(github, http).upsert(7, f"{MARKER}\nreal")
    assert action == "created"
    assert github.bodies(7) == [f"{MARKER}\nforged by a user", f"{MARKER}\nreal"]


def test_unchanged_body_is_not_sent_again(github: FakeGitHub, http: Http) -> None:
    gh = client(github, http)
    assert gh.upsert(7, f"{MARKER}\nsame")[1] == "created"
    before = len(github.requests)
    assert gh.upsert(7, f"{MARKER}\nsame")[1] == "unchanged"
    assert [r.method for r in github.requests[before:]] == ["GET", "GET"]  # /user, then the comments


def test_identity_from_user_endpoint(http: Http) -> None:
    with FakeGitHub(login="ci-bot", user_endpoint_forbidden=False) as server:
        server.add_comment(3, f"{MARKER}\nby github-actions", "github-actions[bot]")
        server.add_comment(3, f"{MARKER}\nby ci-bot", "ci-bot")
        client(server, http).upsert(3, f"{MARKER}\nnew")
        assert server.bodies(3) == [f"{MARKER}\nby github-actions", f"{MARKER}\nnew"]


def test_enterprise_base_url(http: Http) -> None:
    with FakeGitHub(prefix="/api/v3") as server:
        client(server, http).upsert(1, f"{MARKER}\nx")
        assert all(r.path.startswith("/api/v3/") for r in server.requests)
        assert server.bodies(1) == [f"{MARKER}\nx"]


def test_retries_honour_retry_after_and_5xx(github: FakeGitHub) -> None:
    waits: list[float] = []
    http = Http(requests.Session(), sleep=waits.append)
    github.fail_next(429, headers={"Retry-After": "7"}, method="POST")
    github.fail_next(502, times=2, method="POST")
    assert client(github, http).upsert(5, f"{MARKER}\nx")[1] == "created"
    assert waits == [7.0, 2.0, 4.0]
    assert [r.method for r in github.requests].count("POST") == 4


def test_rate_limit_403_waits_for_reset(github: FakeGitHub) -> None:
    waits: list[float] = []
    http = Http(requests.Session(), sleep=waits.append, clock=lambda: 1000.0)
    github.fail_next(403, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1010"}, method="POST")
    assert client(github, http).upsert(5, f"{MARKER}\nx")[1] == "created"
    assert waits == [11.0]


def test_retry_after_beyond_the_bound_gives_up(github: FakeGitHub) -> None:
    http = Http(requests.Session(), sleep=lambda s: None, max_wait=60)
    github.fail_next(429, headers={"Retry-After": "3600"}, method="POST")
    with pytest.raises(Exception, match="asks to wait 3600 s"):
        client(github, http).upsert(5, f"{MARKER}\nx")


@pytest.fixture
def actions_env(tmp_path: Path, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 42}}))
    files = {"summary": tmp_path / "step_summary.md", "output": tmp_path / "output.txt"}
    for name, value in {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(event),
                        "GITHUB_API_URL": github.url, "GITHUB_TOKEN": github.token, "GITHUB_REPOSITORY": "octo/app",
                        "GITHUB_SERVER_URL": "https://github.example", "GITHUB_RUN_ID": "99",
                        "GITHUB_STEP_SUMMARY": str(files["summary"]), "GITHUB_OUTPUT": str(files["output"])}.items():
        monkeypatch.setenv(name, value)
    state = tmp_path / ".llmops"
    state.mkdir()
    (state / "summary.json").write_text(json.dumps(SUMMARY))
    monkeypatch.chdir(tmp_path)
    return files


def test_comment_step_in_a_pull_request(cli: Callable[..., CliResult], github: FakeGitHub,
                                        actions_env: dict[str, Path]) -> None:
    result = cli("comment", "--platform", "github")
    assert result.code == 0, result.err
    (body,) = github.bodies(42)
    assert body.startswith(MARKER) and "[CI run](https://github.example/octo/app/actions/runs/99)" in body
    summary = actions_env["summary"].read_text()
    assert MARKER not in summary and "### Lint" in summary
    assert "10 lint findings were not annotated" in summary
    outputs = dict(line.split("=", 1) for line in actions_env["output"].read_text().splitlines())
    assert outputs["passed"] == "false"
    assert outputs["comment-url"].endswith(f"#issuecomment-{github.comments[42][0]['id']}")
    assert outputs["summary"].endswith(".llmops/summary.json")
    annotations = [line for line in result.out.splitlines() if line.startswith(("::error ", "::warning "))]
    assert len(annotations) == 20 and annotations[0].startswith("::error file=flows/a/flow.dag.yaml,line=2,col=2,")
    assert annotations[0].endswith("::finding 1, with: punctuation")


def test_fork_pr_without_write_access_does_not_fail_the_build(cli: Callable[..., CliResult], github: FakeGitHub,
                                                             actions_env: dict[str, Path]) -> None:
    github.write_forbidden = True
    result = cli("comment", "--platform", "github")
    assert result.code == 0
    assert "::warning::could not write the PR comment (HTTP 403)" in result.err
    assert "### Lint" in actions_env["summary"].read_text()
    assert github.bodies(42) == []


def test_every_step_updates_the_comment_unless_turned_off(cli: Callable[..., CliResult], github: FakeGitHub,
                                                           actions_env: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "flows" / "f").mkdir(parents=True)
    (tmp_path / "flows" / "f" / "flow.dag.yaml").write_text("inputs: {}\noutputs: {}\nnodes: []\n")
    assert cli("lint", "--platform", "github", "--comment", "off").code == 0
    assert github.bodies(42) == []
    assert cli("lint", "--platform", "github").code == 0
    (body,) = github.bodies(42)
    assert "✅ llmops-ci: all checks passed" in body


def test_no_pull_request_no_comment(github: FakeGitHub, http: Http, tmp_path: Path) -> None:
    out = io.StringIO()
    result = GitHub().publish(Publication(Summary.parse(SUMMARY), tmp_path), {"GITHUB_EVENT_NAME": "push"}, http, out)
    assert result.comment == "skipped" and github.requests == []
