"""What a CI platform is to llmops-ci: the ``Platform`` protocol (where results go) and the ``Host`` protocol (the
CI system the wrappers run on: its event, its messages and its step outputs).

Stdlib only at import time, as every platform module: the action's first step runs ``llmops_ci.ci`` on the bare
interpreter, before llmops-ci and its dependencies are installed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from llmops_ci.core.safe_text import log_safe

if TYPE_CHECKING:
    from llmops_ci.core.http import Http
    from llmops_ci.results.summary import Finding, Summary


@dataclass(frozen=True)
class Publication:
    """What a step hands to the platform: the results so far and what to do with them."""

    summary: Summary
    state_dir: Path
    comment: bool = True  # write the PR comment (when there is a PR)
    annotate: bool = False  # annotations for lint findings (once per job: the lint step)
    pr: int | None = None  # the PR number, when given on the command line
    echo: bool = False  # print the markdown (the `comment` step)
    # the wrappers' publish step: the run step already wrote the job summary and the wrapper sets the outputs,
    # so the platform writes the comment alone
    comment_only: bool = False


@dataclass
class Published:
    passed: bool
    comment_url: str | None = None
    comment: str = "skipped"  # created | updated | unchanged | skipped | failed


class Host(Protocol):
    """The CI system as the wrappers (``python -m llmops_ci.ci``) see it, bound to one job's environment."""

    name: str
    # how the wrapper spells each input, for messages: the action has `steps` and `changed-since`,
    # the template `steps` and `changedSince`
    names: Mapping[str, str]
    no_baseline: str  # the notice on a pull-request build when no baseline of its target branch was found
    # files the wrapper's upload of the state dir as an artifact needs in it (name: content)
    state_dir_files: Mapping[str, str]

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

    def find_pull_request(self, http: Http) -> int | None:
        """``pull_request_number``, or the PR asked of the API when the event names none (GitHub's
        ``workflow_run`` of a fork's PR)."""
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


class Platform(Protocol):
    name: str
    # the CI system ends what a job left running when the job ends: an executor may wait for the job's next step
    ends_job_processes: bool
    # the variables this CI system puts into a job that carry its own credential (never for flow code, never in
    # an output), and prefixes of such variables
    credentials: frozenset[str]
    credential_prefixes: tuple[str, ...]

    def detected(self, environ: Mapping[str, str]) -> bool:
        """Whether this process runs on this CI system (``--platform auto``)."""
        ...

    def host(self, environ: Mapping[str, str], out: TextIO) -> Host: ...

    def build_tags(self, environ: Mapping[str, str]) -> dict[str, str]:
        """What a registered model records of the build: ``git.commit``, ``ci.build``, ``ci.pr`` (those known)."""
        ...

    def formatter(self) -> logging.Formatter: ...

    def mask(self, secret: str, out: TextIO) -> None:
        """Tell the CI system to hide ``secret`` wherever it shows up in the job log."""
        ...

    def publish(self, pub: Publication, environ: Mapping[str, str], http: Http, out: TextIO) -> Published:
        """PR comment, job summary, annotations and step outputs; never fails the build."""
        ...


class CommandFormatter(logging.Formatter):
    """Log records as a CI system shows them: errors and warnings as its issue commands, debug lines as its debug
    command, the rest as plain text that can start no command."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return self.issue("error", msg)
        if record.levelno >= logging.WARNING:
            return self.issue("warning", msg)
        if record.levelno <= logging.DEBUG:
            return self.debug(msg)
        return log_safe(msg)

    def issue(self, level: str, msg: str) -> str:
        return f"{level}: {log_safe(msg)}"

    def debug(self, msg: str) -> str:
        return log_safe(msg)


def finding_location(finding: Finding, names: tuple[str, str, str], prop: Callable[[object], str]) -> list[str]:
    """A finding's path, line and column as an annotation command's properties, under the platform's ``names`` for
    them and escaped by its ``prop``."""
    path, line, column = names
    props = [f"{path}={prop(finding.path)}"]
    if finding.line:
        props.append(f"{line}={finding.line}")
    if finding.column:
        props.append(f"{column}={finding.column}")
    return props
