"""Prompt flow's executor started before the command line is parsed: ``python -m llmops_ci pr`` (or
``batch-run``, ``eval-run``) starts it first thing, so that prompt flow's import (about 1 s, the larger part of a
step's fixed cost) runs on another CPU while this process imports the rest of llmops-ci, reads the config and
lints.

It is a guess from the words of the command line alone. The backend takes it only if it is exactly the process it
would start (same environment, state dir, ``--workers`` and log); otherwise, or when nothing runs on prompt flow,
it is stopped and nothing of it is used. A wrong guess costs CPU, never a result."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from llmops_ci.engines.promptflow.home import PFHome
from llmops_ci.engines.promptflow.launch import Launched, executor_base, launch
from llmops_ci.engines.promptflow.linger import POINTER

RUN_STEPS = frozenset({"pr", "batch-run", "eval-run"})
# the command line's defaults (cli.DEFAULT_STATE_DIR, --workers): tests/engines/test_pf_early.py holds them equal
DEFAULT_STATE_DIR = ".llmops"
DEFAULT_WORKERS = 4
VALUE_OPTIONS = frozenset({"--config", "--state-dir", "--flow", "--backend", "--platform", "--comment", "--pr",
                           "--workers", "--line-timeout", "--changed-since", "--baseline", "--llm-cache"})
NO_RUN = frozenset({"-h", "--help", "--version", "--dry-run"})
OFF_VAR = "LLMOPS_CI_EARLY_EXECUTOR"  # "0": never start ahead

_early: Launched | None = None
_made: list[Path] = []  # what the early start created in the state dir: removed again if nobody takes it


def guess(argv: Sequence[str]) -> tuple[Path, int] | None:
    """(state dir, --workers) when ``argv`` looks like a step that runs flows on this machine, else None."""
    step = None
    options: dict[str, str] = {}
    words = iter(argv)
    for word in words:
        if word in NO_RUN or word == "--":
            return None
        name, eq, value = word.partition("=")
        if name in VALUE_OPTIONS:
            options[name] = value if eq else next(words, "")
        elif not word.startswith("-") and step is None:
            step = word
    if step not in RUN_STEPS or options.get("--backend", "local") != "local":
        return None
    try:
        workers = int(options.get("--workers", DEFAULT_WORKERS))
    except ValueError:
        return None
    return Path(options.get("--state-dir") or DEFAULT_STATE_DIR).absolute(), workers


def start_early(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> None:
    """Start the executor ``argv`` will most likely use; never fails (the step starts its own if this did not)."""
    global _early
    environ = dict(os.environ if environ is None else environ)
    found = guess(argv) if environ.get(OFF_VAR) != "0" else None
    if found is None or _early is not None:
        return
    state_dir, workers = found
    if (state_dir / POINTER).exists():  # an earlier step of the job kept a warm one: the step will use that
        return
    root = None
    log_path = state_dir / "logs" / "executor.log"
    made = [path for path in (state_dir, log_path.parent, log_path) if not path.exists()]
    try:
        root = Path(tempfile.mkdtemp(prefix="llmops-pf-"))
        _early = launch(PFHome(root).prepare(), executor_base(environ, state_dir), workers, log_path)
        _made[:] = made
    except Exception:  # a state dir that cannot be made, a full disk: the step reports it in its own words
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
        return
    atexit.register(discard)


def take(base: dict[str, str], workers: int, log_path: Path) -> Launched | None:
    """The early executor if it is exactly the one the caller would start (it is the caller's from now on); else
    None, and the early one is stopped."""
    global _early
    found, _early = _early, None
    _made.clear()  # the step's executor writes to that log, whichever it is
    if found is None:
        return None
    if found.same(base, workers, log_path):
        return found
    found.stop()
    return None


def discard() -> None:
    """Stop the early executor if nobody took it (nothing runs on prompt flow, or the step ended before)."""
    global _early
    found, _early = _early, None
    if found is not None:
        with contextlib.suppress(Exception):
            found.stop()
        # a command refused before its step (bad usage) leaves no state dir it did not ask for
        for path in reversed(_made):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()
    _made.clear()


def pending() -> bool:
    return _early is not None
