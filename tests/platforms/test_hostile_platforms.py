"""GitHub and Azure DevOps APIs that misbehave: non-JSON 200s, endless pagination, hangs, unwritable runner files.

Publishing never crashes and never changes the exit code; it warns and keeps the rest of the report.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from llmops_ci.core.http import Http
from llmops_ci.platforms import Publication
from llmops_ci.platforms.azure_devops import AzureDevOps
from llmops_ci.platforms.github import GitHub, pr_number
from llmops_ci.report.comment import MARKER
from llmops_ci.results.summary import Summary
from tests.conftest import CliResult
from tests.fakes.ado import FakeAzureDevOps
from tests.fakes.github import FakeGitHub

SUMMARY = {"schema": "llmops-ci/summary@1", "lint": {"findings": []}}


class SteppingClock:
    """A monotonic clock that moves ``step`` seconds per reading: time budgets are tested without waiting."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as server:
        yield server


@pytest.fixture
def ado() -> Iterator[FakeAzureDevOps]:
    with FakeAzureDevOps() as server:
        yield server


def _gh_env(server: FakeGitHub, tmp_path: Path) -> dict[str, str]:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 42}}))
    return {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(event),
            "GITHUB_API_URL": server.url, "GITHUB_TOKEN": server.token, "GITHUB_REPOSITORY": "octo/app",
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"), "GITHUB_OUTPUT": str(tmp_path / "output.txt")}


def _gh_publish(server: FakeGitHub, tmp_path: Path, http: Http | None = None,
                **env: str) -> tuple[object, dict[str, str]]:
    environ = {**_gh_env(server, tmp_path), **env}
    result = GitHub().publish(Publication(Summary.parse(SUMMARY), tmp_path / "state"), environ,
                              http or Http(requests.Session(), sleep=lambda s: None), io.StringIO())
    return result, environ


def test_github_200_with_html_is_a_warning_not_a_crash(github: FakeGitHub, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    github.fail_next(200, body="<html>proxy login</html>", method="GET", times=2)
    result, _ = _gh_publish(github, tmp_path)
    assert result.comment == "failed"  # type: ignore[attr-defined]
    assert "body is not JSON" in caplog.text
    assert "llmops-ci" in (tmp_path / "summary.md").read_text()
    assert "passed=" in (tmp_path / "output.txt").read_text()


@pytest.mark.parametrize("body", ["<html>ok</html>", {"not": "a list"}])
def test_github_comment_list_that_is_not_a_list(github: FakeGitHub, tmp_path: Path, body: object) -> None:
    github.fail_next(200, body=body, method="GET", times=2)  # type: ignore[arg-type]
    result, _ = _gh_publish(github, tmp_path)
    assert result.comment == "failed"  # type: ignore[attr-defined]
    assert github.bodies(42) == []


def test_github_created_comment_answer_that_is_not_json(github: FakeGitHub, tmp_path: Path) -> None:
    github.fail_next(201, body="<html>created?</html>", method="POST")
    result, _ = _gh_publish(github, tmp_path)
    assert result.comment == "failed"  # type: ignore[attr-defined]


def test_a_link_next_loop_is_detected(github: FakeGitHub, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    github.add_comment(42, "a human comment", "someone")
    github.link_loop = True
    result, _ = _gh_publish(github, tmp_path)
    gets = [r for r in github.requests if r.method == "GET" and r.path.endswith("/comments")]
    assert len(gets) == 1 and result.comment == "failed"  # type: ignore[attr-defined]
    assert "points back at a page already read" in caplog.text
    assert github.bodies(42) == ["a human comment"]  # no duplicate comment was posted blind


def test_pages_are_bounded(github: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops_ci.platforms import github_api

    monkeypatch.setattr(github_api, "MAX_PAGES", 3)
    for i in range(450):
        github.add_comment(42, f"comment {i}", "someone")
    result, _ = _gh_publish(github, tmp_path)
    gets = [r for r in github.requests if r.method == "GET" and r.path.endswith("/comments")]
    assert len(gets) == 3 and result.comment == "failed"  # type: ignore[attr-defined]


def test_a_hanging_api_costs_one_budget_per_publish(github: FakeGitHub, tmp_path: Path) -> None:
    """Each request times out; the publish gives up when its 60 s budget is spent instead of 8 x 30 s."""
    github.stall = 1.0
    clock = SteppingClock(step=25.0)  # every reading of the clock: 25 s later
    http = Http(requests.Session(), timeout=0.2, sleep=lambda s: None, monotonic=clock)
    result, _ = _gh_publish(github, tmp_path, http)
    assert result.comment == "failed"  # type: ignore[attr-defined]
    assert len(github.requests) <= 2  # without the budget: 4 attempts x (GET /user, GET comments) = 8
    assert http.deadline is None  # the budget ends with the publish


def test_the_budget_stops_waits_that_would_overrun(github: FakeGitHub) -> None:
    waits: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    http = Http(requests.Session(), sleep=sleep, monotonic=lambda: now[0])
    github.fail_next(503, times=10)
    with http.budget(5.0), pytest.raises(Exception, match="no time left to retry"):
        http.request("GET", f"{github.url}/user")
    assert waits == [1.0, 2.0]  # at 3 s, the next 4 s wait would end past the 5 s budget


@pytest.mark.parametrize("target", ["dir", "missing-dir", "fifo", "readonly"])
def test_an_unwritable_step_summary_is_a_warning(github: FakeGitHub, tmp_path: Path, target: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "summary-target"
    if target == "dir":
        path.mkdir()
    elif target == "missing-dir":
        path = tmp_path / "nowhere" / "summary.md"
    elif target == "fifo":
        os.mkfifo(path)
    else:
        path.write_text("")
        path.chmod(0o444)
        if os.access(path, os.W_OK):  # root ignores file modes
            pytest.skip("running as root: a read-only file is writable")
    result, _ = _gh_publish(github, tmp_path, GITHUB_STEP_SUMMARY=str(path))
    assert result.comment == "created"  # type: ignore[attr-defined]
    assert "could not write $GITHUB_STEP_SUMMARY" in caplog.text
    assert "passed=" in (tmp_path / "output.txt").read_text()


def test_an_unwritable_step_summary_keeps_the_exit_code(cli: Callable[..., CliResult], github: FakeGitHub,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _gh_env(github, tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path))  # a folder
    (tmp_path / ".llmops").mkdir()
    (tmp_path / ".llmops" / "summary.json").write_text(json.dumps(SUMMARY))
    monkeypatch.chdir(tmp_path)
    result = cli("comment", "--platform", "github")
    assert result.code == 0 and "could not write $GITHUB_STEP_SUMMARY" in result.err
    assert "Traceback" not in result.err and github.bodies(42)[0].startswith(MARKER)


def test_an_event_file_that_is_a_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "event.json"
    os.mkfifo(fifo)
    assert pr_number({"GITHUB_EVENT_PATH": str(fifo), "GITHUB_EVENT_NAME": "pull_request"}, None) is None


def _ado_env(server: FakeAzureDevOps) -> dict[str, str]:
    return {"TF_BUILD": "True", "SYSTEM_COLLECTIONURI": server.url, "SYSTEM_TEAMPROJECTID": server.project_id,
            "BUILD_REPOSITORY_ID": server.repository_id, "SYSTEM_PULLREQUEST_PULLREQUESTID": "17",
            "SYSTEM_ACCESSTOKEN": server.token}


def _ado_publish(server: FakeAzureDevOps, state: Path, http: Http | None = None) -> tuple[str, object]:
    out = io.StringIO()
    result = AzureDevOps().publish(Publication(Summary.parse(SUMMARY), state), _ado_env(server),
                                   http or Http(requests.Session(), sleep=lambda s: None), out)
    return out.getvalue(), result


@pytest.mark.parametrize("body", ["<html>sign in</html>", ["not", "an", "object"], {"value": "nope"}])
def test_ado_200_that_is_not_the_thread_list(ado: FakeAzureDevOps, tmp_path: Path, body: object,
                                             caplog: pytest.LogCaptureFixture) -> None:
    ado.fail_next(200, body=body, method="GET")  # type: ignore[arg-type]
    out, result = _ado_publish(ado, tmp_path / "state")
    assert result.comment == "failed"  # type: ignore[attr-defined]
    assert "could not write the PR thread" in caplog.text
    assert "##vso[task.uploadsummary]" in out and ado.threads.get(17, []) == []


def test_ado_thread_with_odd_comments_is_updated(ado: FakeAzureDevOps, tmp_path: Path) -> None:
    _, first = _ado_publish(ado, tmp_path / "state")
    assert first.comment == "created"  # type: ignore[attr-defined]
    ado.threads[17][0]["comments"] = ["not a comment object"]
    _, second = _ado_publish(ado, tmp_path / "state")
    assert second.comment in ("updated", "failed")  # type: ignore[attr-defined]


def test_ado_hanging_api_is_bounded(ado: FakeAzureDevOps, tmp_path: Path) -> None:
    ado.stall = 1.0
    http = Http(requests.Session(), timeout=0.2, sleep=lambda s: None, monotonic=SteppingClock(step=25.0))
    _, result = _ado_publish(ado, tmp_path / "state", http)
    assert result.comment == "failed" and len(ado.requests) <= 2  # type: ignore[attr-defined]


def test_ado_unwritable_state_dir_still_publishes(ado: FakeAzureDevOps, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    state.write_text("a file where the state dir should be")
    out, result = _ado_publish(ado, state)
    assert result.comment == "created"  # type: ignore[attr-defined]
    assert "no summary tab for this step" in caplog.text and "##vso[task.uploadsummary]" not in out
