"""Azure Pipelines: one PR thread over REST 7.1 (found by a thread property), summary tab, log issues."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import quote

from llmops_ci.core import log
from llmops_ci.core.http import Http, HttpFailure
from llmops_ci.core.schema import as_dict, as_list
from llmops_ci.platforms import Publication, Published
from llmops_ci.report.comment import outcome, render

logger = logging.getLogger("llmops_ci.azure_devops")
API = {"api-version": "7.1"}
CONNECTION_DATA_API = {"api-version": "7.1-preview.1"}  # the resource exists only as a preview
PROPERTY = "llmops-ci.comment"
COMMENT_LIMIT = 150_000
ISSUES_LIMIT = 50
PUBLISH_SECONDS = 60.0  # all API calls of one publish, retries included


def _prop(value: object) -> str:
    return log.escape_azure(str(value))


def build_url(environ: Mapping[str, str]) -> str | None:
    """The build's results page (System.CollectionUri, System.TeamProject, Build.BuildId: predefined variables)."""
    collection, project, build = (environ.get("SYSTEM_COLLECTIONURI"), environ.get("SYSTEM_TEAMPROJECT"),
                                  environ.get("BUILD_BUILDID"))
    if not (collection and project and build and build.isdigit()):
        return None
    return f"{collection.rstrip('/')}/{quote(project)}/_build/results?buildId={build}"


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


class AzureDevOps:
    name = "azure-devops"

    def formatter(self) -> logging.Formatter:
        return log.AzureDevOpsFormatter()

    def mask(self, secret: str, out: TextIO) -> None:
        log.command(out, f"##vso[task.setsecret]{log.escape_azure(secret)}\n", secret=True)

    def publish(self, pub: Publication, environ: Mapping[str, str], http: Http, out: TextIO) -> Published:
        result = Published(outcome(pub.summary).passed)
        if pub.annotate:
            for f in sorted(pub.summary.findings, key=lambda f: f.severity != "error")[:ISSUES_LIMIT]:
                props = [f"type={'error' if f.severity == 'error' else 'warning'}", f"sourcepath={_prop(f.path)}"]
                if f.line:
                    props.append(f"linenumber={f.line}")
                if f.column:
                    props.append(f"columnnumber={f.column}")
                props.append(f"code={_prop(f.rule)}")
                log.command(out, f"##vso[task.logissue {';'.join(props)}]{log.escape_azure(str(f.message))}\n")
        pr = pub.pr or (int(environ["SYSTEM_PULLREQUEST_PULLREQUESTID"])
                        if environ.get("SYSTEM_PULLREQUEST_PULLREQUESTID", "").isdigit() else None)
        if pub.comment and pr is not None:
            with http.budget(PUBLISH_SECONDS):
                self._comment(pub, environ, http, pr, result)
        summary_md = pub.state_dir / "summary.md"
        try:
            pub.state_dir.mkdir(parents=True, exist_ok=True)
            summary_md.write_text(render(pub.summary, limit=COMMENT_LIMIT * 4, full_report="the state dir artifact")
                                  + "\n", encoding="utf-8")
        except OSError as exc:
            logger.warning("could not write %s (%s); no summary tab for this step", summary_md, exc)
        else:
            log.command(out, f"##vso[task.uploadsummary]{_prop(summary_md.absolute())}\n")
        passed = "true" if result.passed else "false"
        log.command(out, f"##vso[task.setvariable variable=passed;isOutput=true]{passed}\n")
        summary_json = (pub.state_dir / "summary.json").absolute()
        # escaped: a state dir path with a line break must not start a command of its own
        log.command(out, f"##vso[task.setvariable variable=summary;isOutput=true]{_prop(summary_json)}\n")
        if result.comment_url:
            log.command(out, f"##vso[task.setvariable variable=commentUrl;isOutput=true]{_prop(result.comment_url)}\n")
        return result

    def _comment(self, pub: Publication, environ: Mapping[str, str], http: Http, pr: int, result: Published) -> None:
        needed = ("SYSTEM_COLLECTIONURI", "SYSTEM_TEAMPROJECTID", "BUILD_REPOSITORY_ID", "SYSTEM_ACCESSTOKEN")
        missing = [name for name in needed if not environ.get(name)]
        if missing:
            logger.warning("no PR comment: %s not set (map it in the pipeline: env: SYSTEM_ACCESSTOKEN: "
                           "$(System.AccessToken))", ", ".join(missing))
            return
        client = AzureDevOpsThreads(http, environ["SYSTEM_COLLECTIONURI"], environ["SYSTEM_TEAMPROJECTID"],
                                    environ["BUILD_REPOSITORY_ID"], environ["SYSTEM_ACCESSTOKEN"])
        run_url = build_url(environ)
        body = render(pub.summary, limit=COMMENT_LIMIT, full_report="the build summary tab and the state dir artifact",
                      run_url=run_url, artifacts_url=f"{run_url}&view=artifacts" if run_url else None)
        try:
            result.comment_url, result.comment = client.upsert(pr, body, "fixed" if result.passed else "active")
        except HttpFailure as exc:
            result.comment = "failed"
            if exc.status in (401, 403) or "TF401027" in exc.text:
                logger.warning("could not write the PR thread (HTTP %s): grant 'Contribute to pull requests' to the "
                               "build service identity in the repository's security settings; the report is on the "
                               "summary tab", exc.status)
            else:
                logger.warning("could not write the PR thread: %s; the report is on the summary tab", exc)
