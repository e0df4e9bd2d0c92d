"""GitHub's REST API as the PR comment needs it: the one comment on a PR that carries our marker and was written by
our own identity (imported only when a comment is written)."""

from __future__ import annotations

from typing import Any

from llmops_ci.core.http import Http, HttpFailure
from llmops_ci.core.schema import as_dict
from llmops_ci.report.comment import MARKER

ACTIONS_BOT = "github-actions[bot]"
MAX_PAGES = 100  # 10,000 comments at 100 per page; a Link header that never ends must not loop forever


class GitHubComments:
    """The one comment on a PR that carries our marker and was written by our own identity."""

    def __init__(self, http: Http, api_url: str, token: str, repository: str) -> None:
        self.http, self.api, self.repository = http, api_url.rstrip("/"), repository
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                        "X-GitHub-Api-Version": "2022-11-28"}

    def login(self) -> str:
        try:
            login = as_dict(self.http.json("GET", f"{self.api}/user", headers=self.headers)).get("login")
        except HttpFailure:
            login = None
        # an Actions token may not read /user; its comments are github-actions[bot]'s
        return login if isinstance(login, str) and login else ACTIONS_BOT

    def find(self, number: int, login: str) -> dict[str, Any] | None:
        url: str | None = f"{self.api}/repos/{self.repository}/issues/{number}/comments?per_page=100"
        found = None
        seen: set[str] = set()
        while url:
            if url in seen or len(seen) >= MAX_PAGES:
                why = "points back at a page already read" if url in seen else f"goes past {MAX_PAGES} pages"
                raise HttpFailure(f"GET {url}: the comment list's Link: rel=\"next\" {why}; stopped reading")
            seen.add(url)
            response = self.http.request("GET", url, headers=self.headers)
            try:
                comments = response.json()
            except (ValueError, RecursionError):
                raise HttpFailure(f"GET {url}: HTTP {response.status_code} but the body is not JSON: "
                                  f"{response.text[:200]!r}", response) from None
            if not isinstance(comments, list):
                raise HttpFailure(f"GET {url}: expected a list of comments, got {type(comments).__name__}", response)
            for comment in comments:
                if isinstance(comment, dict) and MARKER in str(comment.get("body", "")) \
                        and as_dict(comment.get("user")).get("login") == login and "id" in comment:
                    found = comment
            url = response.links.get("next", {}).get("url")
        return found

    def upsert(self, number: int, body: str) -> tuple[str, str]:
        existing = self.find(number, self.login())
        if existing is not None and existing.get("body") == body:
            return str(existing.get("html_url")), "unchanged"
        if existing is not None:
            edited = self.http.json("PATCH", f"{self.api}/repos/{self.repository}/issues/comments/"
                                    f"{existing['id']}", headers=self.headers, json={"body": body})
            return str(as_dict(edited).get("html_url")), "updated"
        created = self.http.json("POST", f"{self.api}/repos/{self.repository}/issues/{number}/comments",
                                 headers=self.headers, json={"body": body})
        return str(as_dict(created).get("html_url")), "created"
