"""``llmops-ci eval-run``: each flow's evaluation flows against that flow's batch run."""

from __future__ import annotations

import argparse

from llmops_ci.execute import eval_run
from llmops_ci.runs import preflight
from llmops_ci.steps import Context, add_run_options, load_project, run_context, run_options, select_for_run


class EvalRunStep:
    name = "eval-run"
    help = "run each flow's evaluations against its batch run (metrics and per-line scores into the state dir)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_run_options(parser)

    def run(self, args: argparse.Namespace, ctx: Context) -> int:
        config = load_project(args.config)
        flows = select_for_run(config, args, ctx)
        if not flows:
            return 0
        preflight(config, flows)
        eval_run(config, flows, run_options(args), run_context(args.backend, ctx))
        return 0


STEP = EvalRunStep()
