"""The one entry of the CI wrappers: ``python -m llmops_ci.ci [run|prepare|baseline]``.

``action.yml`` and ``azure-pipelines-template.yml`` set up Python, install llmops-ci, call this with their
inputs in ``LLMOPS_*`` environment variables, and upload artifacts; everything else is decided here.

- ``run`` (the default): the steps in ``LLMOPS_STEPS``, each with the options it takes, in this process;
  stops at the first that fails; sets the outputs passed, summary and exit-code. It never writes the PR
  comment: the step that runs it holds no CI token, because flow code runs in it.
- ``publish``: the separate step that holds the token and runs no flow code: the PR comment or thread, and
  the outputs (passed, summary, comment-url, exit-code, metrics), also when the job stopped early.
- ``baseline``: copies the results to ``LLMOPS_BASELINE_OUT`` when ``LLMOPS_EXIT_CODE`` says they are
  complete (0 or 1), and sets baseline-ready.
- ``prepare`` (the action, before the install): refuses pull_request_target, checks the inputs, names the
  venv, cache keys and artifact.

Stdlib only at import time: ``prepare`` runs before llmops-ci and its dependencies are installed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping

from llmops_ci.ci.plan import InputError
from llmops_ci.platforms import Host, detect_host

COMMANDS = ("run", "publish", "baseline", "prepare")
Call = Callable[[list[str]], int]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    host = detect_host(os.environ, sys.stdout)
    if len(args) > 1 or (args and args[0] not in COMMANDS):
        host.message("error", f"usage: python -m llmops_ci.ci [{'|'.join(COMMANDS)}] (inputs come from LLMOPS_* "
                              "environment variables: docs/github-action.md, docs/azure-pipelines.md)")
        return 2
    return dispatch(args[0] if args else "run", os.environ, host)


def dispatch(command: str, environ: Mapping[str, str], host: Host, call: Call | None = None) -> int:
    """``call`` runs one llmops-ci command line (default: ``llmops_ci.cli.main`` in this process)."""
    try:
        if command == "prepare":
            from llmops_ci.ci.prepare import prepare

            return prepare(environ, host)
        if command == "publish":
            from llmops_ci.ci.publish import publish

            return publish(environ, host, sys.stdout)
        if command == "baseline":
            from llmops_ci.ci.baseline import save

            return save(environ, host)
        from llmops_ci.ci.run import call_cli, run

        return run(environ, host, call or call_cli)
    except InputError as exc:
        host.message("error", str(exc))
        if command == "run":
            host.set_output("passed", "false")
            host.set_output("exit-code", "2")
        return 2
    except KeyboardInterrupt:
        host.message("error", "interrupted")
        return 130
