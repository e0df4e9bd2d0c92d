"""A laptop: the comment's markdown goes to ``<state-dir>/comment.md``; the terminal gets it as plain text; the
wrappers' messages are plain lines and their outputs are printed. The fallback when no CI system is detected."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO

from llmops_ci.core.safe_text import log_safe
from llmops_ci.platforms.base import CommandFormatter, Host, Publication, Published

if TYPE_CHECKING:
    from llmops_ci.core.http import Http


class LocalFormatter(CommandFormatter):
    """``error: ...``, ``warning: ...`` and plain lines, all neutralised: ``--platform local`` may still run on a CI
    runner, whose log is read for commands all the same."""


class LocalHost:
    """``python -m llmops_ci.ci`` on a laptop: plain lines, outputs printed."""

    name = "local"
    names: Mapping[str, str] = {"steps": "LLMOPS_STEPS", "changed_since": "LLMOPS_CHANGED_SINCE",
                                "llm_cache": "LLMOPS_LLM_CACHE", "working_directory": "LLMOPS_WORKING_DIRECTORY"}
    no_baseline = "no baseline of the base branch: relative gate rules report 'no baseline'"
    state_dir_files: Mapping[str, str] = {}

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

    def find_pull_request(self, http: Http) -> int | None:
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


class Local:
    name = "local"
    ends_job_processes = False
    credentials: frozenset[str] = frozenset()
    credential_prefixes: tuple[str, ...] = ()

    def detected(self, environ: Mapping[str, str]) -> bool:
        return False  # never detected: what runs where no CI system is

    def host(self, environ: Mapping[str, str], out: TextIO) -> Host:
        return LocalHost(environ, out)

    def build_tags(self, environ: Mapping[str, str]) -> dict[str, str]:
        return {}

    def formatter(self) -> logging.Formatter:
        return LocalFormatter()

    def mask(self, secret: str, out: TextIO) -> None:
        return

    def publish(self, pub: Publication, environ: Mapping[str, str], http: Http, out: TextIO) -> Published:
        from llmops_ci.report.comment import outcome, render, render_text  # needs llmops-ci's dependencies

        body = render(pub.summary, full_report=f"{pub.state_dir}/summary.json")
        pub.state_dir.mkdir(parents=True, exist_ok=True)
        path = pub.state_dir / "comment.md"
        path.write_text(body + "\n", encoding="utf-8")
        if pub.echo:  # a terminal gets plain text; the markdown is in comment.md
            out.write(render_text(pub.summary) + "\n")
        return Published(outcome(pub.summary).passed, str(path.absolute()), "updated")
