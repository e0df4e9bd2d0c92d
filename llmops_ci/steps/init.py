"""``llmops-ci init``: a starter llmops.yaml for the flows below a folder; never overwrites."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from llmops_ci.config import DEFAULT_CONFIG
from llmops_ci.core.errors import UsageError
from llmops_ci.lint.project import LintRequest, lint
from llmops_ci.project.starter import build
from llmops_ci.steps import Context, Step
from llmops_ci.steps.settings import Settings

log = logging.getLogger("llmops_ci.init")


class InitStep(Step):
    name = "init"
    help = "write an llmops.yaml for the flows found below a folder (every kind); never overwrites"
    publishes = True  # nothing to publish: it writes a file and leaves the state dir alone

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("folder", nargs="?", type=Path, default=Path("."),
                            help="where to look for flows and write llmops.yaml (default: this folder)")

    def run(self, settings: Settings, ctx: Context) -> int:
        root = settings.folder
        if not root.is_dir():
            raise UsageError(f"{root}: no such folder")
        target = settings.config if settings.config is not None else root / DEFAULT_CONFIG
        if target.exists() or target.is_symlink():
            raise UsageError(f"{target} already exists; init never overwrites: move it away, or pass "
                             "--config NEW.yaml to write another file")
        config_root = target.parent.absolute()
        if config_root != root.absolute() and config_root not in root.absolute().parents:
            raise UsageError(f"--config {target}: write the config in {root} or a folder above it, so that its "
                             "paths stay inside the project")
        try:
            starter = build(root.absolute(), config_root)
        except LookupError as exc:
            raise UsageError(f"{exc}; init looks for flow.dag.yaml, flow.flex.yaml, .prompty files and the other "
                             "kinds' definition files (an MLflow agent is declared by hand: see "
                             "docs/mlflow-agents.md)") from None
        for rel, text in starter.data_files.items():
            path = config_root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("x", encoding="utf-8") as handle:  # "x": a file that appeared meanwhile is kept
                handle.write(text)
            log.info("wrote %s: a one-line sample data set; replace it with your test cases", path)
        try:
            with target.open("x", encoding="utf-8") as handle:
                handle.write(starter.text)
        except FileExistsError:
            raise UsageError(f"{target} already exists; init never overwrites") from None
        report = lint(LintRequest(config=target))
        kinds = ", ".join(sorted({f.info.kind for f in starter.flows}))
        # what the config holds (lint's count), not every folder found: an evaluation flow is no flow of its own
        flows, evals = report.flows_checked, report.evaluations_checked
        unplaced = sum(1 for f in starter.flows if f.evaluation) - evals
        ctx.stdout.write(f"wrote {target}: {flows} flow{'s' * (flows != 1)}"
                         + (f" and {evals} evaluation{'s' * (evals != 1)}" if evals else "") + f" ({kinds})"
                         + (f"; {unplaced} evaluation flow{'s' * (unplaced != 1)} to place under the flow it scores "
                            "(see the comment at its end)" if unplaced > 0 else "") + "\n")
        if report.errors or report.warnings:
            ctx.stdout.write(f"lint: {report.errors} error(s), {report.warnings} warning(s): run "
                             f"'llmops-ci lint --config {target}' to see them\n")
        ctx.stdout.write(f"next: llmops-ci pr --config {target}\n")
        ctx.stdout.flush()
        return 0


STEP = InitStep()
