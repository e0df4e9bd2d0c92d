"""The child's side of a runner process (``plumbing.run_child`` starts it): one request as JSON on stdin, one
outcome as JSON in the result file the request names, and an exit that skips interpreter teardown (an engine's
background threads and atexit hooks must not keep the process once its answer is written). Plain Python only:
the runner stays light until its engine is imported."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn


def failure(exc: BaseException) -> dict[str, Any]:
    """An exception as the parent reads it: it decides the exit code from ``error_code``."""
    return {"status": "Failed", "error": f"{type(exc).__name__}: {exc}", "error_code": type(exc).__name__,
            "traceback": traceback.format_exc()}


def answer(handle: Callable[[dict[str, Any]], dict[str, Any]], *,
           catch: type[BaseException] = Exception) -> NoReturn:
    """Read the request, write what ``handle`` made of it (or the ``catch``-able exception it raised), exit 0."""
    req = json.loads(sys.stdin.read())
    try:
        outcome = handle(req)
    except catch as exc:  # reported to the parent, which decides the exit code
        outcome = failure(exc)
    Path(req["result"]).write_text(json.dumps(outcome, default=str), encoding="utf-8")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
