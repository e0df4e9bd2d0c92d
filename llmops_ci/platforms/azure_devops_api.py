"""Azure DevOps REST 7.1 as the PR thread needs it: our one thread, found by a thread property and its author
(imported only when a thread is written)."""

from __future__ import annotations

import logging
from typing import Any

from llmops_ci.core.http import Http, HttpFailure
from llmops_ci.core.schema import as_dict, as_list

logger = logging.getLogger("llmops_ci.azure_devops")
API = {"api-version": "7.1"}
CONNECTION_DATA_API = {"api-version": "7.1-preview.1"}  # the resource exists only as a preview
PROPERTY = "llmops-ci.comment"


class AzureDevOpsThreads:
    def __init__(self, http: Http, collection: str, project: str, repository: str, token: str) -> None:
        self.http = http
        self.collection, self.project, self.repository = collection.rstrip("/"), project, repository
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def threads_url(self, pr: int) -> str:
        return (f"{self.collection}/{self.project}/_apis/git/repositories/{self.repository}/pullRequests/{pr}"
                "/threads")

    def me(self) -> str | None:
        """The token's identity: ``authenticatedUser.id`` of ``GET {collection}/_apis/connectionData`` (a preview
        resource of the Location area), the id thread comments carry as ``author.id``; None when it cannot be told."""
        try:
            data = self.http.json("GET", f"{self.collection}/_apis/connectionData", headers=self.headers,
                                  params=CONNECTION_DATA_API)
        except HttpFailure as exc:
            logger.warning("could not tell which identity the token is (connectionData: %s); a new PR thread is "
                           "posted and no existing one is edited", exc)
            return None
        user_id = as_dict(as_dict(data).get("authenticatedUser")).get("id")
        return str(user_id) if isinstance(user_id, str) and user_id else None

    def find(self, pr: int) -> dict[str, Any] | None:
        """Our thread: it carries our property AND its first comment was written by the token's identity. Anyone may
        set a thread property; only the author can edit a comment, so another's thread is never ours."""
        threads = self.http.json("GET", self.threads_url(pr), headers=self.headers, params=API)
        if not isinstance(as_dict(threads).get("value"), list):
            raise HttpFailure(f"GET {self.threads_url(pr)}: expected {{\"value\": [threads]}}, got "
                              f"{type(threads).__name__}")
        marked = [t for t in as_list(as_dict(threads).get("value")) if isinstance(t, dict)
                  and PROPERTY in as_dict(t.get("properties")) and not t.get("isDeleted") and "id" in t]
        me = self.me() if marked else None  # asked only when there is a thread to tell apart
        for thread in marked:
            comments = as_list(thread.get("comments"))
            author = as_dict(as_dict(comments[0]).get("author")).get("id") if comments else None
            if me is not None and isinstance(author, str) and author.lower() == me.lower():
                return dict(thread)
            logger.info("PR thread %s carries the llmops-ci property but was written by someone else; left alone",
                        thread.get("id"))
        return None

    def upsert(self, pr: int, content: str, status: str) -> tuple[str, str]:
        thread = self.find(pr)
        if thread is None:
            created = self.http.json("POST", self.threads_url(pr), headers=self.headers, params=API, json={
                "comments": [{"parentCommentId": 0, "content": content, "commentType": 1}],
                "status": status, "properties": {PROPERTY: "1"},
            })
            return self.web_url(pr, as_dict(created).get("id")), "created"
        url = f"{self.threads_url(pr)}/{thread['id']}"
        comments = as_list(thread.get("comments"))
        first = as_dict(comments[0]) if comments else {}
        action = "unchanged"
        if first.get("content") != content:
            self.http.request("PATCH", f"{url}/comments/{first.get('id', 1)}", headers=self.headers, params=API,
                              json={"content": content})
            action = "updated"
        if thread.get("status") != status:
            self.http.request("PATCH", url, headers=self.headers, params=API, json={"status": status})
            action = "updated"
        return self.web_url(pr, thread["id"]), action

    def web_url(self, pr: int, thread_id: Any) -> str:
        return f"{self.collection}/{self.project}/_git/{self.repository}/pullrequest/{pr}?discussionId={thread_id}"
