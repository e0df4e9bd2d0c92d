"""``llmops-ci lint``: static checks of config, flows, prompts, tool code, data and mappings."""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

from llmops_ci.config import DEFAULT_CONFIG, not_a_config
from llmops_ci.core import redaction
from llmops_ci.core.errors import CheckFailed, ConfigError, UsageError
from llmops_ci.lint.formats import FORMATS, text
from llmops_ci.lint.project import LintRequest, lint
from llmops_ci.results.state import update_summary
from llmops_ci.steps import Context, Step
from llmops_ci.steps.settings import Settings

log = logging.getLogger("llmops_ci.lint")


class LintStep(Step):
    name = "lint"
    help = "static checks of config, flows, prompts, tool code, data and mappings (no LLM call)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("paths", nargs="*", type=Path, metavar="FLOW_DIR",
                            help="flow folders to lint without a config (default: llmops.yaml if present, "
                                 "else every flow below the current folder)")
        parser.add_argument("--format", choices=sorted(FORMATS), default="text", help="report format")
        parser.add_argument("--output", type=Path, metavar="FILE",
                            help="write the report to FILE (the text report still goes to the log)")

    def stateless(self, settings: Settings, ctx: Context) -> bool:
        """Linting folders on a laptop without a config leaves no state behind, unless a state dir was asked for (in
        CI the state dir is the job's record, and the PR comment is still updated)."""
        if settings.state_dir is not None or ctx.platform.name != "local":
            return False
        try:
            return make_request(settings.config, settings.paths, tuple(settings.flow or ())).config is None
        except UsageError:  # the step stops on it before linting anything: it is noted like any other stop
            return False

    def run(self, settings: Settings, ctx: Context) -> int:
        request = make_request(settings.config, settings.paths, tuple(settings.flow or ()))
        loaded = None
        if request.config is not None:
            # a valid config is loaded once and kept for the steps after lint (pr); lint reports a broken one
            with contextlib.suppress(ConfigError):
                loaded = ctx.project(request.config)
        report = lint(request, loaded)
        rendered = FORMATS[settings.format](report)
        if settings.output is not None:
            try:
                settings.output.parent.mkdir(parents=True, exist_ok=True)
                settings.output.write_text(redaction.redact(rendered), encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"--output {settings.output}: cannot write ({exc.strerror})") from None
            ctx.stdout.write(text(report))
        else:
            ctx.stdout.write(rendered)
        ctx.stdout.flush()
        if not self.stateless(settings, ctx):
            update_summary(ctx.state_dir, "lint", {"findings": [f.to_json() for f in report.findings]})
        if report.errors:
            raise CheckFailed(f"lint found {report.errors} error{'s' if report.errors != 1 else ''}; fix them and "
                              "run 'llmops-ci lint' again")
        return 0


def make_request(config: Path | None, paths: tuple[Path, ...], flows: tuple[str, ...]) -> LintRequest:
    if paths and config is not None:
        raise UsageError("give either flow folders or --config, not both")
    if paths:
        if flows:
            raise UsageError("--flow selects flows from llmops.yaml; with flow folders, list only the ones to lint")
        return LintRequest(paths=paths)
    if config is not None:
        if not config.is_file():
            raise UsageError(f"{config}: {not_a_config(config)}; pass --config PATH to a config file")
        return LintRequest(config=config, flows=flows)
    default = Path(DEFAULT_CONFIG)
    if default.is_file():
        return LintRequest(config=default, flows=flows)
    if flows:
        raise UsageError(f"--flow needs a config: {DEFAULT_CONFIG} not found here; pass --config PATH")
    return LintRequest()


STEP = LintStep()
