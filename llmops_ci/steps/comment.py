"""``llmops-ci comment``: render everything in the state dir into the PR comment and the job summary."""

from __future__ import annotations

import argparse
import logging

from llmops_ci.platforms import Publication
from llmops_ci.report.comment import outcome
from llmops_ci.steps import Context, Step, current_summary
from llmops_ci.steps.settings import Settings

log = logging.getLogger("llmops_ci.comment")


class CommentStep(Step):
    name = "comment"
    help = "render the state dir into the one PR comment, the job summary and step outputs"
    publishes = True  # main does not publish again after this step

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        return None

    def run(self, settings: Settings, ctx: Context) -> int:
        summary = current_summary(settings, ctx)
        result = ctx.platform.publish(Publication(summary, ctx.state_dir, comment=settings.comment != "off",
                                                  annotate=True, pr=settings.pr, echo=True),
                                      ctx.environ, ctx.http, ctx.stdout)
        log.info("comment %s%s", result.comment, f": {result.comment_url}" if result.comment_url else "")
        if outcome(summary).nothing_ran:
            log.error("nothing ran: %s holds no lint, run or evaluation result%s; run the steps first (or pass the "
                      "--state-dir they used)", ctx.state_dir,
                      " of this config" if summary.elsewhere else "")
            return 2
        return 0


STEP = CommentStep()
