"""Self-tests of the GitHub and Azure DevOps fakes (tests/fakes/github.py, tests/fakes/ado.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.fakes.ado import FakeAzureDevOps
from tests.fakes.github import FakeGitHub

V = {"api-version": "7.1"}


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    fake = FakeGitHub(prefix="/api/v3").start()
    yield fake
    fake.stop()


@pytest.fixture
def ado() -> Iterator[FakeAzureDevOps]:
    fake = FakeAzureDevOps().start()
    yield fake
    fake.stop()


def _gh_session(fake: FakeGitHub, scheme: str = "Bearer") -> requests.Session:
    session = requests.Session()
    session.headers.update({"Authorization": f"{scheme} {fake.token}", "Accept": "application/vnd.github+json"})
    return session


def _ado_session(fake: FakeAzureDevOps) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {fake.token}"
    return session


def _threads_url(fake: FakeAzureDevOps, pr: int = 7) -> str:
    return f"{fake.url}{fake.project_id}/_apis/git/repositories/{fake.repository_id}/pullRequests/{pr}/threads"


# -- GitHub --------------------------------------------------------------------------------------------------


def test_github_auth_required(gh: FakeGitHub) -> None:
    url = f"{gh.url}/repos/octo/app/issues/1/comments"
    assert requests.get(url).status_code == 401
    bad = requests.get(url, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["message"] == "Bad credentials"
    ok = requests.get(url, headers={"Authorization": f"token {gh.token}"})
    assert ok.status_code == 200 and ok.json() == []
    assert ok.headers["Content-Type"].startswith("application/json")
    assert ok.headers["x-ratelimit-limit"] == "5000" and int(ok.headers["x-ratelimit-remaining"]) < 5000
    assert int(ok.headers["x-ratelimit-reset"]) > 0
    assert gh.requests[-1].headers["authorization"] == f"token {gh.token}"
    assert _gh_session(gh).get(f"{gh.url}/repos/octo/other/issues/1/comments").json() == {
        "message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"}


def test_github_pagination_link_headers(gh: FakeGitHub) -> None:
    for i in range(250):
        gh.add_comment(5, f"comment {i}", "someone")
    session = _gh_session(gh)
    url = f"{gh.url}/repos/octo/app/issues/5/comments"
    first = session.get(url, params={"per_page": 100})
    assert [c["body"] for c in first.json()][:2] == ["comment 0", "comment 1"] and len(first.json()) == 100
    assert first.links["next"]["url"] == f"{gh.url}/repos/octo/app/issues/5/comments?per_page=100&page=2"
    assert first.links["last"]["url"] == f"{gh.url}/repos/octo/app/issues/5/comments?per_page=100&page=3"
    assert "prev" not in first.links and "first" not in first.links
    assert first.links["next"]["url"].startswith("http://127.0.0.1:") and "/api/v3/" in first.links["next"]["url"]
    second = session.get(first.links["next"]["url"])
    assert set(second.links) == {"prev", "next", "last", "first"}
    assert second.headers["Link"].index('rel="prev"') < second.headers["Link"].index('rel="next"')
    third = session.get(second.links["next"]["url"])
    assert len(third.json()) == 50 and third.json()[-1]["body"] == "comment 249"
    assert set(third.links) == {"prev", "first"}
    bodies: list[str] = []
    next_url: str | None = url + "?per_page=100"
    while next_url:
        page = session.get(next_url)
        bodies += [c["body"] for c in page.json()]
        next_url = page.links.get("next", {}).get("url")
    assert bodies == gh.bodies(5)
    assert len(session.get(url).json()) == 30  # default per_page
    assert len(session.get(url, params={"per_page": 500}).json()) == 100  # capped
    assert session.get(url, params={"per_page": 100, "page": 9}).json() == []
    assert "Link" not in session.get(f"{gh.url}/repos/octo/app/issues/6/comments").headers


def test_github_post_patch_round_trip(gh: FakeGitHub) -> None:
    session = _gh_session(gh)
    created = session.post(f"{gh.url}/repos/octo/app/issues/3/comments", json={"body": "hello"})
    assert created.status_code == 201
    comment = created.json()
    assert comment["id"] >= 1000 and comment["user"] == {**comment["user"], "login": gh.login, "type": "Bot"}
    assert comment["html_url"] == f"https://github.com/octo/app/pull/3#issuecomment-{comment['id']}"
    assert comment["url"] == f"{gh.url}/repos/octo/app/issues/comments/{comment['id']}"
    assert {"created_at", "updated_at"} <= set(comment)
    patched = session.patch(comment["url"], json={"body": "updated"})
    assert patched.status_code == 200 and patched.json()["body"] == "updated"
    assert gh.bodies(3) == ["updated"]
    assert gh.requests[-1].method == "PATCH" and gh.requests[-1].body == {"body": "updated"}
    assert session.patch(f"{gh.url}/repos/octo/app/issues/comments/999999", json={"body": "x"}).status_code == 404
    human = gh.add_comment(3, "by a human", "alice")
    denied = session.patch(human["url"], json={"body": "hijack"})
    assert denied.status_code == 403 and denied.json()["message"] == "Must have admin rights to Repository."
    listed = session.get(f"{gh.url}/repos/octo/app/issues/3/comments").json()
    assert [(c["user"]["login"], c["body"]) for c in listed] == [(gh.login, "updated"), ("alice", "by a human")]


def test_github_write_forbidden(gh: FakeGitHub) -> None:
    existing = gh.add_comment(4, "mine", gh.login)
    gh.write_forbidden = True
    session = _gh_session(gh)
    post = session.post(f"{gh.url}/repos/octo/app/issues/4/comments", json={"body": "x"})
    assert post.status_code == 403 and post.json()["message"] == "Resource not accessible by integration"
    assert "documentation_url" in post.json()
    assert session.patch(existing["url"], json={"body": "y"}).status_code == 403
    assert session.get(f"{gh.url}/repos/octo/app/issues/4/comments").status_code == 200
    assert gh.bodies(4) == ["mine"]


def test_github_fail_next_then_success(gh: FakeGitHub) -> None:
    session = _gh_session(gh)
    url = f"{gh.url}/repos/octo/app/issues/1/comments"
    gh.fail_next(502, times=2)
    assert [session.get(url).status_code for _ in range(3)] == [502, 502, 200]
    gh.fail_next(502, method="POST")
    assert session.get(url).status_code == 200  # only POSTs fail
    assert session.post(url, json={"body": "a"}).status_code == 502
    assert session.post(url, json={"body": "a"}).status_code == 201
    assert gh.bodies(1) == ["a"]


def test_github_429_and_rate_limit_403(gh: FakeGitHub) -> None:
    session = _gh_session(gh)
    url = f"{gh.url}/repos/octo/app/issues/1/comments"
    gh.fail_next(429, headers={"Retry-After": "7"})
    throttled = session.get(url)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert "secondary rate limit" in throttled.json()["message"]
    gh.fail_next(403, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000000"})
    limited = session.get(url)
    assert limited.status_code == 403 and limited.headers["x-ratelimit-remaining"] == "0"
    assert limited.headers["x-ratelimit-reset"] == "1700000000" and "rate limit" in limited.json()["message"]
    gh.fail_next(503, body="<html>unicorn</html>")
    html = session.get(url)
    assert html.status_code == 503 and html.headers["Content-Type"].startswith("text/html")
    assert session.get(url).status_code == 200


def test_github_body_too_long(gh: FakeGitHub) -> None:
    session = _gh_session(gh)
    url = f"{gh.url}/repos/octo/app/issues/2/comments"
    assert session.post(url, json={"body": "x" * 65536}).status_code == 201
    too_long = session.post(url, json={"body": "x" * 65537})
    assert too_long.status_code == 422 and too_long.json()["message"] == "Validation Failed"
    assert too_long.json()["errors"][0] == {"resource": "IssueComment", "code": "custom", "field": "body",
                                            "message": "body is too long (maximum is 65536 characters)"}
    comment_url = session.get(url).json()[0]["url"]
    assert session.patch(comment_url, json={"body": "y" * 70000}).status_code == 422
    assert session.post(url, json={}).status_code == 422


def test_github_user_endpoint(gh: FakeGitHub) -> None:
    session = _gh_session(gh)
    forbidden = session.get(f"{gh.url}/user")
    assert forbidden.status_code == 403 and forbidden.json()["message"] == "Resource not accessible by integration"
    gh.user_endpoint_forbidden = False
    gh.login = "octo-bot"
    user = session.get(f"{gh.url}/user").json()
    assert {k: user[k] for k in ("login", "id", "type")} == {"login": "octo-bot", "id": 1, "type": "Bot"}
    plain = FakeGitHub().start()
    try:
        assert plain.url.startswith("http://127.0.0.1:") and plain.url.count("/") == 2
        assert _gh_session(plain).get(f"{plain.url}/user").status_code == 403
    finally:
        plain.stop()


# -- Azure DevOps --------------------------------------------------------------------------------------------


def test_ado_auth_and_api_version(ado: FakeAzureDevOps) -> None:
    url = _threads_url(ado)
    assert ado.url.endswith(f"/{ado.organization}/")
    assert requests.get(url, params=V).status_code == 401
    assert requests.get(url, params=V, headers={"Authorization": "Bearer wrong"}).status_code == 401
    session = _ado_session(ado)
    missing = session.get(url)
    assert missing.status_code == 400 and "api-version" in missing.json()["message"]
    assert missing.json()["typeKey"] == "VssVersionNotSpecifiedException"
    old = session.get(url, params={"api-version": "5.0"})
    assert old.status_code == 400 and old.json()["message"].startswith("The requested REST API version")
    assert session.get(url, params={"api-version": "7.1-preview.1"}).status_code == 200
    ok = session.get(url, params=V)
    assert ok.status_code == 200 and ok.json() == {"value": [], "count": 0}
    assert ado.requests[-1].query == V
    other_repo = session.get(url.replace(ado.repository_id, "nope"), params=V)
    assert other_repo.status_code == 404 and "TF401019" in other_repo.json()["message"]


def test_ado_create_list_patch(ado: FakeAzureDevOps) -> None:
    session = _ado_session(ado)
    url = _threads_url(ado)
    human = ado.add_thread(7, "LGTM but...", author_id="alice-id")
    created = session.post(url, params=V, json={
        "comments": [{"parentCommentId": 0, "content": "## Report", "commentType": 1}],
        "status": 1, "properties": {"llmops-ci.marker": "main"}})
    assert created.status_code == 200
    thread = created.json()
    assert thread["status"] == "active" and thread["comments"][0]["id"] == 1
    assert thread["comments"][0]["author"]["id"] == ado.identity_id
    assert thread["comments"][0]["commentType"] == "text"
    assert thread["properties"]["llmops-ci.marker"] == {"$type": "System.String", "$value": "main"}
    listed = session.get(url, params=V).json()
    assert listed["count"] == 2 and [t["id"] for t in listed["value"]] == [human["id"], thread["id"]]
    back = listed["value"][1]
    assert back["properties"]["llmops-ci.marker"]["$value"] == "main"
    assert back["properties"]["Microsoft.TeamFoundation.Discussion.SupportsMarkdown"] == {
        "$type": "System.Int32", "$value": 1}
    assert {"publishedDate", "lastUpdatedDate", "isDeleted"} <= set(back)
    fixed = session.patch(f"{url}/{thread['id']}", params=V, json={"status": "fixed"})
    assert fixed.status_code == 200 and fixed.json()["status"] == "fixed"
    closed = session.patch(f"{url}/{thread['id']}", params=V, json={"status": 4})
    assert closed.json()["status"] == "closed" and "llmops-ci.marker" in closed.json()["properties"]
    edited = session.patch(f"{url}/{thread['id']}/comments/1", params=V, json={"content": "## Report v2"})
    assert edited.status_code == 200 and edited.json()["content"] == "## Report v2"
    assert ado.contents(7) == ["LGTM but...", "## Report v2"]
    not_mine = session.patch(f"{url}/{human['id']}/comments/1", params=V, json={"content": "x"})
    assert not_mine.status_code == 403
    assert session.patch(f"{url}/99999", params=V, json={"status": "fixed"}).status_code == 404
    too_long = session.post(url, params=V, json={"comments": [{"content": "x" * 150001}]})
    assert too_long.status_code == 400 and too_long.json()["message"] == "The comment content is too long"
    comment_url = f"{url}/{thread['id']}/comments/1"
    assert session.patch(comment_url, params=V, json={"content": "x" * 150001}).status_code == 400
    by_name = session.get(f"{ado.url}{ado.project_name}/_apis/git/repositories/{ado.repository_name}/pullRequests/7"
                          "/threads", params=V)
    assert by_name.json()["count"] == 2


def test_ado_write_forbidden(ado: FakeAzureDevOps) -> None:
    session = _ado_session(ado)
    url = _threads_url(ado)
    mine: dict[str, Any] = session.post(url, params=V, json={"comments": [{"content": "a"}], "status": "active"}).json()
    ado.write_forbidden = True
    denied = session.post(url, params=V, json={"comments": [{"content": "b"}]})
    assert denied.status_code == 403 and denied.json()["message"].startswith("TF401027:")
    assert denied.json()["typeKey"] == "GitNeedsPermissionException"
    assert session.patch(f"{url}/{mine['id']}", params=V, json={"status": "closed"}).status_code == 403
    assert session.patch(f"{url}/{mine['id']}/comments/1", params=V, json={"content": "c"}).status_code == 403
    assert session.get(url, params=V).json()["count"] == 1


def test_ado_fail_next(ado: FakeAzureDevOps) -> None:
    session = _ado_session(ado)
    ado.fail_next(503, times=2)
    ado.fail_next(429, headers={"Retry-After": "3"})
    codes = [session.get(_threads_url(ado), params=V) for _ in range(4)]
    assert [r.status_code for r in codes] == [503, 503, 429, 200]
    assert codes[2].headers["Retry-After"] == "3"
