"""The command line: ``llmops-ci <step>``; the only place that turns exceptions into exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
import traceback
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from llmops_ci import __version__
from llmops_ci.core import log as logsetup
from llmops_ci.core import redaction
from llmops_ci.core.errors import INTERNAL_ERROR, INTERRUPTED, TERMINATED
from llmops_ci.core.http import Http
from llmops_ci.core.schema import closest
from llmops_ci.core.state_dir import state_dir_problem
from llmops_ci.engines.promptflow import linger
from llmops_ci.platforms import PLATFORMS, Publication, detect
from llmops_ci.results.state import read_summary, update_summary, write_json_atomic
from llmops_ci.steps import Context, Step, current_summary, positive_int, run_step
from llmops_ci.steps.batch_run import STEP as BATCH_RUN
from llmops_ci.steps.comment import STEP as COMMENT
from llmops_ci.steps.deploy import STEP as DEPLOY
from llmops_ci.steps.eval_run import STEP as EVAL_RUN
from llmops_ci.steps.gate import STEP as GATE
from llmops_ci.steps.init import STEP as INIT
from llmops_ci.steps.lint import STEP as LINT
from llmops_ci.steps.pr import STEP as PR
from llmops_ci.steps.register import STEP as REGISTER
from llmops_ci.steps.settings import Settings
from llmops_ci.steps.targets import backend_names
from llmops_ci.steps.test import STEP as TEST

STEPS: dict[str, Step] = {step.name: step for step in (LINT, TEST, BATCH_RUN, EVAL_RUN, GATE, REGISTER, DEPLOY,
                                                       COMMENT, PR, INIT)}

log = logging.getLogger("llmops_ci")
DEFAULT_STATE_DIR = Path(".llmops")


class Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a mistyped step or option."""

    argv: ClassVar[list[str]] = []  # the words being parsed, for a hint about any of them

    def error(self, message: str) -> NoReturn:
        hint = _suggestion(self, message)
        super().error(message + hint)


def _suggestion(parser: argparse.ArgumentParser, message: str) -> str:
    options = sorted(_options(parser))
    for word in Parser.argv:  # an unknown option before the step makes argparse take its value for the step
        option = word.split("=", 1)[0]
        if word.startswith("--") and option not in options:
            best = closest(option, options)
            named = "" if option in message else f"; unknown option {option}"
            return named + (f"; did you mean '{best}'?" if best else "")
    choice = re.search(r"invalid choice: '([^']*)'", message)
    if choice:
        actions = [a for a in parser._actions if a.choices]
        for action in actions:
            best = closest(choice.group(1), [str(c) for c in action.choices or ()])
            if best:
                return f"; did you mean '{best}'?"
        return ""
    return ""


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """Every long option of the parser and of its steps' parsers."""
    options = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for step_parser in action.choices.values():
                options |= _options(step_parser)
    return options


# the common options, accepted before the step (llmops-ci --config x.yaml lint) or after it; given in both places,
# the one after the step wins
COMMON_DEFAULTS: dict[str, Any] = {"config": None, "state_dir": None, "flow": None, "backend": "local",
                                   "platform": "auto", "comment": "auto", "pr": None, "verbose": False}


def _path(text: str) -> Path:
    if not text.strip():  # Path("") is the current folder: an empty value is a mistake, never a wish
        raise argparse.ArgumentTypeError("is empty: give a path, or leave the option out for its default")
    return Path(text)


def _common() -> Parser:
    common = Parser(add_help=False, argument_default=argparse.SUPPRESS)
    group = common.add_argument_group("common options (before or after the step)")
    group.add_argument("--config", type=_path, metavar="PATH", help="project config (default: llmops.yaml)")
    group.add_argument("--state-dir", type=_path, metavar="PATH",
                       help="where results are kept between steps (default: .llmops)")
    group.add_argument("--flow", action="append", metavar="NAME", help="only this flow (repeatable; default: all)")
    group.add_argument("--backend", choices=backend_names(),
                       help="where flows run and models go (default: local: the embedded executor, registry and "
                            "endpoints)")
    group.add_argument("--platform", choices=("auto", *PLATFORMS),
                       help="where results go (default: auto-detect from the CI environment)")
    group.add_argument("--comment", choices=("auto", "off"),
                       help="update the PR comment after this step when running for a pull request (default: auto)")
    group.add_argument("--pr", type=positive_int, metavar="N",
                       help="the pull request to comment on (default: from the CI environment)")
    group.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = Parser(
        prog="llmops-ci", parents=[common],
        description="Lint, run, evaluate and gate prompt flow apps, the same way in CI and on a laptop.",
        epilog="exit codes: 0 passed, 1 a check failed, 2 bad usage/config/input, 3 an outside service failed, "
               "4 internal error in llmops-ci, 130 interrupted (Ctrl-C, SIGINT), 143 terminated (SIGTERM: a CI cancel, "
               "timeout); on 130 and 143 the runs are stopped, recordings kept and summary.json written",
    )
    parser.add_argument("--version", action="version", version=f"llmops-ci {__version__}")
    sub = parser.add_subparsers(dest="step", metavar="<step>", required=True, parser_class=Parser)
    for step in STEPS.values():
        step_parser = sub.add_parser(step.name, help=step.help, description=step.help, parents=[common])
        step.add_arguments(step_parser)
    return parser


def _publish(step: str, settings: Settings, ctx: Context) -> None:
    """After a step, the platform shows everything known so far; this never changes the exit code."""
    try:
        summary = current_summary(settings, ctx)
        ctx.platform.publish(Publication(summary, ctx.state_dir, comment=settings.comment != "off",
                                         annotate=step == "lint", pr=settings.pr), ctx.environ, ctx.http, ctx.stdout)
    except Exception as exc:  # reporting must not fail a build whose checks passed
        log.warning("could not publish the results: %s", exc)
        log.debug("publish failed", exc_info=True)


def settings_of(args: argparse.Namespace) -> Settings:
    """The parsed command line as the typed value the steps read; argparse's Namespace goes no further."""
    given = {**COMMON_DEFAULTS, **vars(args)}
    if given["flow"] is not None:  # repeatable options: argparse collects them in lists
        given["flow"] = tuple(given["flow"])
    for name in ("paths", "input"):
        given[name] = tuple(given.get(name) or ())
    return Settings(**{f.name: given[f.name] for f in fields(Settings) if f.name in given})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    Parser.argv = list(sys.argv[1:] if argv is None else argv)
    settings = settings_of(parser.parse_args(argv))
    platform = detect(settings.platform, os.environ)
    redaction.from_environment(os.environ)
    stdout, stderr = logsetup.SafeStream(sys.stdout), logsetup.SafeStream(sys.stderr)
    logsetup.setup(platform.formatter(), stream=sys.stderr, verbose=settings.verbose)
    ctx = Context(platform=platform, environ=os.environ, stdout=stdout, stderr=stderr,  # type: ignore[arg-type]
                  state_dir=settings.state_dir or DEFAULT_STATE_DIR, http=Http())
    step = STEPS[settings.step]
    unusable = None if step.stateless(settings, ctx) else state_dir_problem(ctx.state_dir)
    if unusable is not None:  # before the step: its first write would fail, and look like a bug (exit 4)
        log.error("%s", unusable)
        return unusable.return_code
    previous = _on_sigterm()
    try:
        code = run_step(step, settings, ctx)
    except KeyboardInterrupt as exc:  # the steps' cleanup ran on the way up: runs stopped, recordings saved
        terminated = isinstance(exc, Terminated)
        log.error("terminated (SIGTERM)" if terminated else "interrupted")
        _mark_interrupted(step.name, "SIGTERM" if terminated else "SIGINT", ctx)
        return TERMINATED if terminated else INTERRUPTED
    except Exception as exc:  # the one place a bug becomes exit 4; what is known is still published
        _internal_error(step.name, exc, ctx)
        _publish(step.name, settings, ctx)
        return INTERNAL_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if not step.keeps_executor:  # the executor earlier steps of the job kept, if any, ends with this one
            linger.stop_kept(ctx.state_dir)
    _clear_internal_error(step.name, ctx)
    if code == 2 and not (ctx.state_dir / "summary.json").is_file():
        return code  # bad usage before anything was kept: nothing to publish
    if not step.publishes and not step.stateless(settings, ctx):
        _publish(step.name, settings, ctx)
    return code


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI cancel, ``timeout``), unwound like Ctrl-C so that every cleanup on the way runs."""


def _on_sigterm() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


def _mark_interrupted(step: str, how: str, ctx: Context) -> None:
    try:  # summary.json says the results are partial (and exists even when nothing finished)
        update_summary(ctx.state_dir, "interrupted", {"step": step, "signal": how})
    except Exception:
        log.debug("could not mark the summary", exc_info=True)


def _internal_error(step: str, exc: BaseException, ctx: Context) -> None:
    log.error("internal error in llmops-ci during '%s' (a bug, not your input): %s: %s\n%s"
              "please report it with this traceback; the results known so far are published, and this state dir "
              "is marked so that it is never used as a baseline", step, type(exc).__name__, exc,
              traceback.format_exc())
    try:  # a mark in summary.json: wrappers and --baseline refuse such a result
        errors: dict[str, Any] = dict(read_summary(ctx.state_dir).get("internal_error") or {})
        errors[step] = {"error": f"{type(exc).__name__}: {exc}"}
        update_summary(ctx.state_dir, "internal_error", errors)
    except Exception:  # the state dir itself may be what broke
        log.debug("could not mark the summary", exc_info=True)


def _clear_internal_error(step: str, ctx: Context) -> None:
    """A step that ran through removes the mark an earlier crash of the same step left."""
    path = ctx.state_dir / "summary.json"
    if not path.is_file():
        return
    try:
        data = read_summary(ctx.state_dir)
        errors = data.get("internal_error")
        if isinstance(errors, dict) and step in errors:
            errors.pop(step)
            if not errors:
                data.pop("internal_error")
            write_json_atomic(path, data)
    except Exception:
        log.debug("could not read the summary", exc_info=True)
