"""GitHub Actions: everything llmops-ci knows of it. Detection, the event, workflow commands and their escaping, the
log formatter, step outputs, the job summary, annotations, the token names, build tags, limits; the sticky PR comment
through the REST client in ``github_api`` (imported when a comment is written).

Stdlib only at import time: the action's first step runs ``llmops_ci.ci`` before llmops-ci is installed.
"""

from __future__ import annotations

import json
import logging
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from llmops_ci.core import log
from llmops_ci.core.http import HttpFailure
from llmops_ci.core.safe_text import log_safe, neutral
from llmops_ci.platforms.base import CommandFormatter, Host, Publication, Published, finding_location

if TYPE_CHECKING:
    from llmops_ci.core.http import Http
    from llmops_ci.results.summary import Summary

logger = logging.getLogger("llmops_ci.github")
# Variables an Actions job (or the gh CLI on it) holds that carry the CI system's own credential; ACTIONS_* also
# holds ACTIONS_RUNTIME_TOKEN, ACTIONS_ID_TOKEN_REQUEST_TOKEN/_URL, ACTIONS_CACHE_URL, ACTIONS_RESULTS_URL
CREDENTIALS = frozenset({"GITHUB_TOKEN", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN"})
CREDENTIAL_PREFIXES = ("ACTIONS_",)
COMMENT_LIMIT = 65_536  # characters of an issue comment's body
SUMMARY_LIMIT = 900_000  # characters; GitHub refuses a step summary over 1 MiB (bytes: emoji take 4)
ANNOTATIONS_PER_TYPE = 10  # GitHub shows at most 10 error and 10 warning annotations per step
PUBLISH_SECONDS = 60.0  # all API calls of one publish, retries included: a hanging API costs a minute, not eight
PULL_REQUEST_TARGET_REFUSAL = (
    "llmops-ci does not run on pull_request_target: that event gives the PR's code (its flows and tools, which "
    "llmops-ci executes) the base repository's secrets, a write token and write access to the cache. "
    "Trigger the workflow with `on: pull_request` instead: a fork's PR then gets a read-only token and no "
    "secrets, the comment is skipped with a warning and the report is in the job summary (see "
    "docs/github-action.md, Pull requests from forks)")


def escape_github(text: str) -> str:
    """Workflow-command data escaping (so a message cannot end the command or start another, on GitHub or on an
    Azure agent that reads the same log)."""
    return (neutral(text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))
            .replace("##vso[", "#\u200b#vso[").replace("##[", "#\u200b#["))


def _prop(value: object) -> str:
    return escape_github(str(value)).replace(":", "%3A").replace(",", "%2C")


class GitHubFormatter(CommandFormatter):
    def issue(self, level: str, msg: str) -> str:
        return f"::{level}::{escape_github(msg)}"

    def debug(self, msg: str) -> str:
        return f"::debug::{escape_github(msg)}"


def outputs(values: Mapping[str, str], delimiter: str = "ghadelimiter") -> str:
    """Step outputs for ``$GITHUB_OUTPUT``. A value with a line break (a state dir path can hold one) uses the
    documented multiline form with a random delimiter, so no value can add an output line of its own."""
    out = []
    for name, value in values.items():
        if "\n" in value or "\r" in value:
            end = f"{delimiter}_{secrets.token_hex(16)}"
            out.append(f"{name}<<{end}\n{value}\n{end}\n")
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
    pull_request = event.get("pull_request") if isinstance(event, dict) else None
    number = pull_request.get("number") if isinstance(pull_request, dict) else None
    return number if isinstance(number, int) else None


def workflow_run_pull_request(environ: Mapping[str, str], http: Any) -> int | None:
    """The open PR whose head is the branch that the triggering run built, asked of the API (the event's
    ``workflow_run.pull_requests`` is empty for a fork's PR). The PR number is never read from the artifact:
    the fork wrote that."""
    try:
        payload = json.loads(Path(environ["GITHUB_EVENT_PATH"]).read_text(encoding="utf-8"))
        run = payload["workflow_run"]
        owner, branch, sha = run["head_repository"]["owner"]["login"], run["head_branch"], run["head_sha"]
        api, repository = environ.get("GITHUB_API_URL", "https://api.github.com"), environ["GITHUB_REPOSITORY"]
        pulls = http.json("GET", f"{api}/repos/{repository}/pulls", params={"head": f"{owner}:{branch}",
                                                                           "state": "open"},
                          headers={"Authorization": f"Bearer {environ.get('GITHUB_TOKEN', '')}",
                                   "Accept": "application/vnd.github+json"})
    except Exception:  # no payload, no token, the API refused: no comment, never a failed build
        return None
    for pull in pulls if isinstance(pulls, list) else []:
        if isinstance(pull, dict) and pull.get("head", {}).get("sha") == sha and isinstance(pull.get("number"), int):
            return int(pull["number"])
    return None


class GitHubHost:
    name = "github"
    names: Mapping[str, str] = {"steps": "steps", "changed_since": "changed-since", "llm_cache": "llm-cache",
                                "working_directory": "working-directory"}
    no_baseline = ("no baseline of the base branch yet: relative gate rules report 'no baseline' (run the action on "
                   "pushes to the default branch to save one)")
    state_dir_files: Mapping[str, str] = {}

    def __init__(self, environ: Mapping[str, str], out: TextIO) -> None:
        self.environ, self.out = environ, out
        self._output_start = self._output_size()

    def refusal(self) -> str | None:
        if self.environ.get("GITHUB_EVENT_NAME") == "pull_request_target":
            return PULL_REQUEST_TARGET_REFUSAL
        return None

    def is_pull_request(self) -> bool:
        return self.environ.get("GITHUB_EVENT_NAME") == "pull_request"

    def pull_request_number(self) -> int | None:
        try:
            payload = json.loads(Path(self.environ["GITHUB_EVENT_PATH"]).read_text(encoding="utf-8"))
        except (KeyError, OSError, ValueError):
            return None
        if not isinstance(payload, dict):
            return None
        if self.is_pull_request():
            number = (payload.get("pull_request") or {}).get("number") or payload.get("number")
            return number if isinstance(number, int) else None
        if self.environ.get("GITHUB_EVENT_NAME") == "workflow_run":
            run = payload.get("workflow_run") or {}
            pulls = run.get("pull_requests") or []
            if run.get("event") == "pull_request" and pulls and isinstance(pulls[0].get("number"), int):
                return int(pulls[0]["number"])
        return None

    def find_pull_request(self, http: Http) -> int | None:
        number = self.pull_request_number()
        if number is None and self.environ.get("GITHUB_EVENT_NAME") == "workflow_run":
            return workflow_run_pull_request(self.environ, http)
        return number

    def pull_request_base(self) -> str | None:
        base = self.environ.get("GITHUB_BASE_REF", "")
        return base if self.is_pull_request() and base else None

    def comment_unsupported(self) -> str | None:
        return None

    def message(self, level: str, text: str) -> None:
        if level == "info":
            self.out.write(log_safe(text) + "\n")
        else:
            self.out.write(f"::{level} title=llmops-ci::{escape_github(text)}\n")
        self.out.flush()

    def set_output(self, name: str, value: str) -> None:
        path = self.environ.get("GITHUB_OUTPUT")
        if not path:
            self.message("info", f"{name}: {value}")
            return
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(outputs({name: value}, delimiter="EOF"))

    def published_passed(self) -> bool:
        path = self.environ.get("GITHUB_OUTPUT")
        if not path:
            return False
        try:
            with open(path, encoding="utf-8") as fh:
                fh.seek(self._output_start)
                written = fh.read()
        except OSError:
            return False
        return any(line.startswith("passed=") for line in written.splitlines())

    def _output_size(self) -> int:
        path = self.environ.get("GITHUB_OUTPUT")
        try:
            return Path(path).stat().st_size if path else 0
        except OSError:
            return 0


class GitHub:
    name = "github"
    ends_job_processes = True
    credentials: frozenset[str] = CREDENTIALS
    credential_prefixes: tuple[str, ...] = CREDENTIAL_PREFIXES

    def detected(self, environ: Mapping[str, str]) -> bool:
        return environ.get("GITHUB_ACTIONS") == "true"

    def host(self, environ: Mapping[str, str], out: TextIO) -> Host:
        return GitHubHost(environ, out)

    def build_tags(self, environ: Mapping[str, str]) -> dict[str, str]:
        ref = environ.get("GITHUB_REF", "")
        tags = {"git.commit": environ.get("GITHUB_SHA", ""), "ci.build": environ.get("GITHUB_RUN_ID", ""),
                "ci.pr": ref.split("/")[2] if ref.startswith("refs/pull/") else ""}
        return {k: v for k, v in tags.items() if v}

    def formatter(self) -> logging.Formatter:
        return GitHubFormatter()

    def mask(self, secret: str, out: TextIO) -> None:
        log.command(out, f"::add-mask::{escape_github(secret)}\n", secret=True)

    def annotate(self, summary: Summary, out: TextIO) -> int:
        """Annotations for lint findings, worst first, within GitHub's per-step cap; returns how many were left out."""
        left_out = 0
        for severity in ("error", "warning"):
            of_kind = [f for f in summary.findings if f.severity == severity]
            for f in of_kind[:ANNOTATIONS_PER_TYPE]:
                props = [*finding_location(f, ("file", "line", "col"), _prop),
                         f"title={_prop('llmops-ci ' + str(f.rule))}"]
                log.command(out, f"::{severity} {','.join(props)}::{escape_github(str(f.message))}\n")
            left_out += max(0, len(of_kind) - ANNOTATIONS_PER_TYPE)
        return left_out

    def publish(self, pub: Publication, environ: Mapping[str, str], http: Http, out: TextIO) -> Published:
        # the report needs llmops-ci's dependencies, which the wrappers' first steps run without
        from llmops_ci.report.comment import MARKER, outcome, render

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
        if pub.comment_only:
            return result
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
        from llmops_ci.platforms.github_api import GitHubComments
        from llmops_ci.report.comment import render

        token, repository = environ.get("GITHUB_TOKEN"), environ.get("GITHUB_REPOSITORY")
        if not token or not repository:
            logger.warning("no PR comment: GITHUB_TOKEN and GITHUB_REPOSITORY must be set (pass the token with "
                           "env: GITHUB_TOKEN: ${{ github.token }})")
            return
        client = GitHubComments(http, environ.get("GITHUB_API_URL", "https://api.github.com"), token, repository)
        body = render(pub.summary, limit=COMMENT_LIMIT, run_url=run_url,
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
