"""``llmops-ci pr``: the pull-request check: lint, batch-run, eval-run, gate and comment in one process."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from llmops_ci.config import DEFAULT_CONFIG, not_a_config
from llmops_ci.core.errors import LlmopsError, UsageError, combined
from llmops_ci.lint.blocks import lint_blocks
from llmops_ci.platforms import Publication
from llmops_ci.results.state import fresh_summary
from llmops_ci.steps import Context, Step, add_run_options, current_summary, run_context, run_step
from llmops_ci.steps.settings import Settings

log = logging.getLogger("llmops_ci.pr")


class PrStep(Step):
    name = "pr"
    help = "the pull-request check: lint, batch-run, eval-run, gate and comment in one go"
    publishes = True

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_run_options(parser)

    def run(self, settings: Settings, ctx: Context) -> int:
        from llmops_ci.steps.batch_run import STEP as BATCH_RUN
        from llmops_ci.steps.eval_run import STEP as EVAL_RUN
        from llmops_ci.steps.gate import STEP as GATE
        from llmops_ci.steps.lint import STEP as LINT

        config = settings.config or Path(DEFAULT_CONFIG)
        if not config.is_file():
            found = "no such file" if not config.exists() else not_a_config(config)
            raise UsageError(f"{config}: {found}: pr runs the flows an llmops.yaml names, and there is none "
                             f"in {Path.cwd()}; write one with 'llmops-ci init' (or pass --config PATH), or run "
                             "'llmops-ci lint' alone to check flow folders without a config")
        fresh_summary(ctx.state_dir)
        self._prestart(settings, ctx)
        codes = [run_step(LINT, replace(settings, paths=(), format="text", output=None), ctx)]
        runnable, blocked = self._split(settings, ctx) if codes[-1] == 1 else (None, [])
        if runnable == []:
            log.error("lint failed: no flow was run; fix the lint errors above")
        elif codes[-1] not in (0, 1):
            log.error("pr stopped before any flow ran: see the error above")
        else:
            run_settings = settings
            if blocked and runnable:  # lint errors stop only the flows they concern; the others run
                run_settings = replace(settings, flow=tuple(runnable))
                log.error("lint errors stop %s; running the other flows: %s", ", ".join(blocked),
                          ", ".join(runnable))
            # the local report printed at the end shows the gate table: the gate step need not print it too
            run_settings = replace(run_settings, gate_table=ctx.platform.name != "local")
            steps: list[Step] = [BATCH_RUN, EVAL_RUN, GATE]
            for step in steps:
                codes.append(run_step(step, run_settings, ctx))
                if codes[-1] in (2, 3):  # bad input or a dead endpoint: later steps cannot say more
                    break
        try:
            summary = current_summary(settings, ctx)
            result = ctx.platform.publish(Publication(summary, ctx.state_dir, comment=settings.comment != "off",
                                                      annotate=True, pr=settings.pr, echo=ctx.platform.name == "local"),
                                          ctx.environ, ctx.http, ctx.stdout)
            log.info("comment %s%s", result.comment, f": {result.comment_url}" if result.comment_url else "")
        except Exception as exc:  # reporting never changes the outcome
            log.warning("could not publish the results: %s", exc)
        return combined(codes)


    @staticmethod
    def _prestart(settings: Settings, ctx: Context) -> None:
        """Start the flow executor of the runs to come now, so that prompt flow loads (~2 s of CPU, in a process of
        its own) while lint runs. It lives in this step's backend scope: the batch and the evaluation runs use it,
        and it stops with ``pr`` (at once, if lint stopped every flow). A config lint will refuse starts nothing."""
        if settings.backend != "local":
            return
        try:
            project = ctx.project(settings.config)
            infos = [project.info(path) for flow in project.config.select(settings.flows)
                     for path in (flow.path, *(e.path for e in flow.evaluations.values()))]
        except (LlmopsError, OSError, ValueError):  # lint reports what is wrong
            return
        backend = run_context(settings.backend, ctx, project, settings).backend
        backend.prestart([info for info in infos if info is not None], settings.workers)

    @staticmethod
    def _split(settings: Settings, ctx: Context) -> tuple[list[str], list[str]]:
        """The selected flows free of lint errors (their own and their evaluations'), and those stopped by some."""
        try:
            project = ctx.project(settings.config)
            flows = project.config.select(settings.flows)
        except LlmopsError:  # the config itself is broken: lint reported it, no flow can run
            return [], []
        blocked = lint_blocks(project, flows)
        return [f.name for f in flows if f.name not in blocked], list(blocked)


STEP = PrStep()
