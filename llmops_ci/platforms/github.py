"""The CI system the wrapper runs on: its event, its messages and its step outputs (``Host`` + registry).

Stdlib only at import time: the action's first step runs this package before llmops-ci is installed.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, TextIO

from llmops_ci.core.log import escape_azure, escape_github
from llmops_ci.core.safe_text import log_safe

PULL_REQUEST_TARGET_REFUSAL = (
    "llmops-ci does not run on pull_request_target: that event gives the PR's code (its flows and tools, which "
    "llmops-ci executes) the base repository's secrets, a write token and write access to the cache. "
    "Trigger the workflow with `on: pull_request` instead: a fork's PR then gets a read-only token and no "
    "secrets, the comment is skipped with a warning and the report is in the job summary (see "
    "docs/github-action.md, Pull requests from forks)")


class Host(Protocol):
    name: str
    # how the wrapper spells each input, for messages: the action has `steps` and `changed-since`,
    # the template `steps` and `changedSince`
    names: Mapping[str, str]

    def refusal(self) -> str | None:
        """Why llmops-ci must not run for this event at all, or None."""
        ...

    def pull_request_base(self) -> str | None:
        """On a pull-request build, the name of its target branch (no ``refs/heads/``); else None."""
        ...

    def is_pull_request(self) -> bool: ...

    def pull_request_number(self) -> int | None:
        """The PR that the comment or thread belongs to, from the CI's own event data; else None."""
        ...

    def comment_unsupported(self) -> str | None:
        """Why no PR comment can be written on this host even when asked for, or None."""
        ...

    def message(self, level: str, text: str) -> None:
        """``level``: error, warning, notice or info."""
        ...

    def set_output(self, name: str, value: str) -> None:
        """Outputs: passed, summary, exit-code, baseline-ready, and the action's prepare values."""
        ...

    def published_passed(self) -> bool:
        """Whether llmops-ci already wrote the ``passed`` output in this run (GitHub: read back the file)."""
        ...


class GitHub:
    name = "github"
    names: Mapping[str, str] = {"steps": "steps", "changed_since": "changed-since", "llm_cache": "llm-cache",
                                "working_directory": "working-directory"}

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
            if "\n" in value or "\r" in value:
                delimiter = f"EOF_{secrets.token_hex(8)}"
                fh.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
            else:
                fh.write(f"{name}={value}\n")

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


class AzureDevOps:
    name = "azure-devops"
    names: Mapping[str, str] = {"steps": "steps", "changed_since": "changedSince", "llm_cache": "llmCache",
                                "working_directory": "workingDirectory"}
    # step outputs of the run step (`$(llmops.passed)`) and job variables for the later steps
    OUTPUTS: Mapping[str, tuple[str, bool]] = {
        "passed": ("passed", True), "summary": ("summary", True), "exit-code": ("exitCode", True),
        "comment-url": ("commentUrl", True),
        "baseline-ready": ("LLMOPS_BASELINE_READY", False)}

    def __init__(self, environ: Mapping[str, str], out: TextIO) -> None:
        self.environ, self.out = environ, out

    def refusal(self) -> str | None:
        return None

    def is_pull_request(self) -> bool:
        return self.environ.get("BUILD_REASON") == "PullRequest"

    def pull_request_number(self) -> int | None:
        number = self.environ.get("SYSTEM_PULLREQUEST_PULLREQUESTID", "")
        return int(number) if self.is_pull_request() and number.isdigit() else None

    def pull_request_base(self) -> str | None:
        target = self.environ.get("SYSTEM_PULLREQUEST_TARGETBRANCH", "")
        if not self.is_pull_request() or not target:
            return None
        # refs/heads/<name> for Azure Repos, just <name> for GitHub repositories
        return target.removeprefix("refs/heads/")

    def comment_unsupported(self) -> str | None:
        provider = self.environ.get("BUILD_REPOSITORY_PROVIDER", "")
        if provider and provider != "TfsGit":
            return "PR thread: only Azure Repos pull requests get one; the report is on the summary tab"
        return None

    def message(self, level: str, text: str) -> None:
        if level in ("error", "warning"):
            self.out.write(f"##vso[task.logissue type={level}]{escape_azure(text)}\n")
        else:
            self.out.write(log_safe(text) + "\n")
        self.out.flush()

    def set_output(self, name: str, value: str) -> None:
        variable, is_output = self.OUTPUTS.get(name, (name, True))
        flag = ";isOutput=true" if is_output else ""
        self.out.write(f"##vso[task.setvariable variable={variable}{flag}]{escape_azure(value)}\n")
        if name == "exit-code":  # a job variable too: the baseline step reads $(LLMOPS_EXIT_CODE)
            self.out.write(f"##vso[task.setvariable variable=LLMOPS_EXIT_CODE]{escape_azure(value)}\n")
        self.out.flush()

    def published_passed(self) -> bool:
        return False  # the agent reads the log; a later setvariable simply wins


class Local:
    """``python -m llmops_ci.ci`` on a laptop: plain lines, outputs printed."""

    name = "local"
    names: Mapping[str, str] = {"steps": "LLMOPS_STEPS", "changed_since": "LLMOPS_CHANGED_SINCE",
                                "llm_cache": "LLMOPS_LLM_CACHE", "working_directory": "LLMOPS_WORKING_DIRECTORY"}

    def __init__(self, environ: Mapping[str, str], out: TextIO) -> None:
        self.environ, self.out = environ, out

    def refusal(self) -> str | None:
        return None

    def is_pull_request(self) -> bool:
        return False

    def pull_request_base(self) -> str | None:
        return None

    def pull_request_number(self) -> int | None:
        return None

    def comment_unsupported(self) -> str | None:
        return None

    def message(self, level: str, text: str) -> None:
        prefix = "" if level in ("info", "notice") else f"{level}: "
        self.out.write(prefix + log_safe(text) + "\n")
        self.out.flush()

    def set_output(self, name: str, value: str) -> None:
        self.message("info", f"{name}: {value}")

    def published_passed(self) -> bool:
        return False


class HostFactory(Protocol):
    def __call__(self, environ: Mapping[str, str], out: TextIO) -> Host: ...


HOSTS: dict[str, HostFactory] = {"github": GitHub, "azure-devops": AzureDevOps, "local": Local}


def detect(environ: Mapping[str, str], out: TextIO) -> Host:
    """The same rule as ``--platform auto``."""
    if environ.get("GITHUB_ACTIONS") == "true":
        return HOSTS["github"](environ, out)
    if environ.get("TF_BUILD", "").lower() == "true":
        return HOSTS["azure-devops"](environ, out)
    return HOSTS["local"](environ, out)

