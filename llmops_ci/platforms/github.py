"""GitHub Actions: one sticky PR comment over the REST API, the job summary, annotations, step outputs."""

from __future__ import annotations

import json
import logging
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from llmops_ci.core import log
from llmops_ci.core.http import Http, HttpFailure
from llmops_ci.core.schema import as_dict
from llmops_ci.platforms import Publication, Published
from llmops_ci.report.comment import GITHUB_LIMIT, MARKER, outcome, render
from llmops_ci.results.summary import Summary

logger = logging.getLogger("llmops_ci.github")
ACTIONS_BOT = "github-actions[bot]"
SUMMARY_LIMIT = 900_000  # characters; GitHub refuses a step summary over 1 MiB (bytes: emoji take 4)
ANNOTATIONS_PER_TYPE = 10  # GitHub shows at most 10 error and 10 warning annotations per step
MAX_PAGES = 100  # 10,000 comments at 100 per page; a Link header that never ends must not loop forever
PUBLISH_SECONDS = 60.0  # all API calls of one publish, retries included: a hanging API costs a minute, not eight


def _prop(value: object) -> str:
    return log.escape_github(str(value)).replace(":", "%3A").replace(",", "%2C")


def pr_number(environ: Mapping[str, str], override: int | None) -> int | None:
    if override is not None:
        return override
    path = environ.get("GITHUB_EVENT_PATH")
    if not path or environ.get("GITHUB_EVENT_NAME") not in ("pull_request", "pull_request_target"):
        return None
    try:
        if not stat.S_ISREG(Path(path).stat().st_mode):
            return None
        event = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    number = as_dict(as_dict(event).get("pull_request")).get("number")
    return number if isinstance(number, int) else None


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


class GitHub:
    name = "github"

    def formatter(self) -> logging.Formatter:
        return log.GitHubFormatter()

    def mask(self, secret: str, out: TextIO) -> None:
        log.command(out, f"::add-mask::{log.escape_github(secret)}\n", secret=True)

    def annotate(self, summary: Summary, out: TextIO) -> int:
        """Annotations for lint findings, worst first, within GitHub's per-step cap; returns how many were left out."""
        left_out = 0
        for severity in ("error", "warning"):
            of_kind = [f for f in summary.findings if f.severity == severity]
            for f in of_kind[:ANNOTATIONS_PER_TYPE]:
                props = [f"file={_prop(f.path)}"]
                if f.line:
                    props.append(f"line={f.line}")
                if f.column:
                    props.append(f"col={f.column}")
                props.append(f"title={_prop('llmops-ci ' + str(f.rule))}")
                log.command(out, f"::{severity} {','.join(props)}::{log.escape_github(str(f.message))}\n")
            left_out += max(0, len(of_kind) - ANNOTATIONS_PER_TYPE)
        return left_out

    def publish(self, pub: Publication, environ: Mapping[str, str], http: Http, out: TextIO) -> Published:
        result = Published(outcome(pub.summary).passed)
        server = environ.get("GITHUB_SERVER_URL", "https://github.com")
        run_url = (f"{server}/{environ['GITHUB_REPOSITORY']}/actions/runs/{environ['GITHUB_RUN_ID']}"
                   if environ.get("GITHUB_REPOSITORY") and environ.get("GITHUB_RUN_ID") else None)
        left_out = self.annotate(pub.summary, out) if pub.annotate else 0
        number = pr_number(environ, pub.pr)
        if pub.comment and number is not None:
            with http.budget(PUBLISH_SECONDS):
                self._comment(pub, environ, http, number, run_url, result)
        elif pub.comment:
            logger.debug("no pull request in this event: no PR comment")
        full = render(pub.summary, limit=SUMMARY_LIMIT, run_url=run_url, full_report="the state dir artifact",
                      artifacts_url=f"{run_url}#artifacts" if run_url else None)
        if left_out:
            full += f"\n\n{left_out} lint findings were not annotated (GitHub shows {ANNOTATIONS_PER_TYPE} per type)."
        if environ.get("GITHUB_STEP_SUMMARY"):
            _append(environ["GITHUB_STEP_SUMMARY"], "GITHUB_STEP_SUMMARY", full.replace(MARKER, "", 1).lstrip() + "\n")
        if environ.get("GITHUB_OUTPUT"):
            _append(environ["GITHUB_OUTPUT"], "GITHUB_OUTPUT", outputs({
                "passed": "true" if result.passed else "false",
                "summary": str((pub.state_dir / "summary.json").absolute()),
                "comment-url": result.comment_url or ""}))
        return result

    def _comment(self, pub: Publication, environ: Mapping[str, str], http: Http, number: int, run_url: str | None,
                 result: Published) -> None:
        token, repository = environ.get("GITHUB_TOKEN"), environ.get("GITHUB_REPOSITORY")
        if not token or not repository:
            logger.warning("no PR comment: GITHUB_TOKEN and GITHUB_REPOSITORY must be set (pass the token with "
                           "env: GITHUB_TOKEN: ${{ github.token }})")
            return
        client = GitHubComments(http, environ.get("GITHUB_API_URL", "https://api.github.com"), token, repository)
        body = render(pub.summary, limit=GITHUB_LIMIT, run_url=run_url,
                      artifacts_url=f"{run_url}#artifacts" if run_url else None)
        try:
            result.comment_url, result.comment = client.upsert(number, body)
        except HttpFailure as exc:
            result.comment = "failed"
            if exc.status in (401, 403, 404):
                logger.warning("could not write the PR comment (HTTP %s): the token cannot write to this pull "
                               "request (a PR from a fork, or the workflow lacks 'permissions: pull-requests: "
                               "write'); the report is in the job summary", exc.status)
            else:
                logger.warning("could not write the PR comment: %s; the report is in the job summary", exc)


def outputs(values: Mapping[str, str]) -> str:
    """Step outputs for ``$GITHUB_OUTPUT``. A value with a line break (a state dir path can hold one) uses the
    documented multiline form with a random delimiter, so no value can add an output line of its own."""
    out = []
    for name, value in values.items():
        if "\n" in value or "\r" in value:
            delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
            out.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
        else:
            out.append(f"{name}={value}\n")
    return "".join(out)


def _append(path: str, variable: str, text: str) -> None:
    """Append to a runner file; a file that cannot be written is a warning, never a failed build."""
    try:
        if Path(path).exists():
            mode = Path(path).stat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):  # a FIFO would block the step forever
                raise OSError("not a regular file")
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except (OSError, ValueError) as exc:
        logger.warning("could not write $%s (%s): %s; the results are still in the state dir", variable, path, exc)
