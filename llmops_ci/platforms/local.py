"""A laptop: the comment's markdown goes to ``<state-dir>/comment.md``; the terminal gets it as plain text."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TextIO

from llmops_ci.core import log
from llmops_ci.core.http import Http
from llmops_ci.platforms import Publication, Published
from llmops_ci.report.comment import outcome, render, render_text


class Local:
    name = "local"

    def formatter(self) -> logging.Formatter:
        return log.LocalFormatter()

    def mask(self, secret: str, out: TextIO) -> None:
        return

    def publish(self, pub: Publication, environ: Mapping[str, str], http: Http, out: TextIO) -> Published:
        body = render(pub.summary, full_report=f"{pub.state_dir}/summary.json")
        pub.state_dir.mkdir(parents=True, exist_ok=True)
        path = pub.state_dir / "comment.md"
        path.write_text(body + "\n", encoding="utf-8")
        if pub.echo:  # a terminal gets plain text; the markdown is in comment.md
            out.write(render_text(pub.summary) + "\n")
        return Published(outcome(pub.summary).passed, str(path.absolute()), "updated")
