"""``python -m llmops_ci`` and the ``llmops-ci`` command."""

from __future__ import annotations

import gc
import sys


def run() -> int:
    # imports make many objects and few cycles: the collector's passes over them are time lost at every start
    gc.disable()
    try:
        from llmops_ci.engines.promptflow import early

        early.start_early(sys.argv[1:])
        from llmops_ci.cli import main
    finally:
        gc.freeze()  # else the first pass once enabled walks every object the imports made
        gc.enable()
    try:
        return main()
    finally:
        early.discard()


if __name__ == "__main__":
    raise SystemExit(run())
