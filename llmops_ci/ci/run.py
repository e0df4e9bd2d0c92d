"""Run the planned llmops-ci steps in this process, stop at the first that fails, and set the outputs."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from llmops_ci.ci.plan import InputError, make_plan, read_inputs
from llmops_ci.core.state_dir import state_dir_problem
from llmops_ci.platforms import Host

Call = Callable[[list[str]], int]

MEANING = {0: "passed", 1: "a check failed", 2: "bad usage, config or input", 3: "an outside service failed",
           4: "internal error in llmops-ci", 130: "interrupted", 143: "terminated"}


def call_cli(argv: list[str]) -> int:
    """``llmops_ci.cli.main`` in this process; its return code is the step's exit code."""
    try:
        from llmops_ci.cli import main

        return main(argv)
    except SystemExit as exc:  # argparse: --help, or a bad option value
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except KeyboardInterrupt:
        return 130
    except Exception:  # cli.main owns exit 4; this only covers an exception that still escaped it
        print("internal error in llmops-ci (please report it with this traceback):", flush=True)
        traceback.print_exc()
        return 4


@contextlib.contextmanager
def working_directory(path: str, host: Host) -> Iterator[None]:
    if not Path(path).is_dir():
        raise InputError(f"{host.names.get('working_directory', 'working-directory')}: '{path}' is not a folder "
                         "(it is relative to the repository root)")
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def describe(code: int) -> str:
    return MEANING.get(code, "see the log above")


def run(environ: Mapping[str, str], host: Host, call: Call = call_cli) -> int:
    refusal = host.refusal()
    if refusal:
        host.message("error", refusal)
        return 2
    inputs = read_inputs(environ, host)
    with working_directory(inputs.working_directory, host):
        # the comment is the publish step's (python -m llmops_ci.ci publish): this step has no token
        plan = make_plan(replace(inputs, comment=False), host)
        for level, text in plan.notes:
            host.message(level, text)
        state_dir = Path(inputs.state_dir)
        unusable = state_dir_problem(state_dir)
        if unusable is not None:
            host.message("error", str(unusable))
            return unusable.return_code
        for name, content in host.state_dir_files.items():
            state_dir.mkdir(parents=True, exist_ok=True)
            (state_dir / name).write_text(content, encoding="utf-8")
        code = run_commands(plan.commands, host, call)
        finish(host, code, state_dir)
    return code


class Terminated(KeyboardInterrupt):
    """SIGTERM between two steps (a step's own run turns it into its exit 143)."""


def _terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    raise Terminated()


def run_commands(commands: list[list[str]], host: Host, call: Call) -> int:
    """The steps one after another; stops at the first that fails. They share one job scope: the run steps
    (``batch-run``, ``eval-run``) use one warm executor, started by the first, stopped when the last has run or on
    SIGINT/SIGTERM, wherever it lands (a step's own handler while it runs, this one between steps)."""
    from llmops_ci.steps import job_scope

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    code = 0
    try:
        with job_scope():
            for argv in commands:
                host.message("info", "llmops-ci " + shlex.join(argv))
                code = call(argv)
                if code != 0:
                    host.message("info", f"llmops-ci {argv[0]} exited with {code} ({describe(code)})")
                    break
    except KeyboardInterrupt as exc:
        code = 143 if isinstance(exc, Terminated) else 130
        host.message("info", f"llmops-ci stopped between steps: {describe(code)}")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return code


def finish(host: Host, code: int, state_dir: Path) -> None:
    """Set passed/summary/exit-code last, so that they hold even when a step stopped before publishing
    (bad config, a crash) or a later step failed after an earlier one published ``passed=true``."""
    summary = state_dir / "summary.json"
    passed = code == 0
    if passed and summary.is_file():
        try:
            from llmops_ci.report.comment import outcome
            from llmops_ci.results.state import load_summary

            passed = outcome(load_summary(state_dir)).passed
        except Exception as exc:  # an unreadable summary is no pass
            host.message("warning", f"could not read {summary}: {exc}")
            passed = False
    host.set_output("passed", "true" if passed else "false")
    if summary.is_file():
        host.set_output("summary", str(summary.absolute()))
    host.set_output("exit-code", str(code))
