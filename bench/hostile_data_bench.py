"""Reading hostile data files: llmops-ci's data check, prompt flow's own loader (the peer) and the ideal, side by side.

    python bench/hostile_data_bench.py

Cases: one JSON line with 60,000 keys (column bookkeeping used to be quadratic: ~45 s), 60,000 lines of
10 keys, and a 50 MB single-line file (over llmops-ci's 10 M character line bound: refused without
reading it whole). The ideal is ``json.loads`` of every line, nothing else.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from llmops_ci.project.data import read_data


def _timed(fn: Callable[[], object]) -> str:
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:  # the peer refuses some inputs: show how, not a traceback
        return f"{time.perf_counter() - start:6.2f} s ({type(exc).__name__})"
    refused = " (refused)" if getattr(result, "fatal", None) else ""
    return f"{time.perf_counter() - start:6.2f} s{refused}"


def _ideal(path: Path) -> None:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            json.loads(line)


def _peer(path: Path) -> Callable[[], object]:
    from promptflow._utils.load_data import load_data  # prompt flow's reader for a run's data

    return lambda: load_data(str(path))


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="llmops-bench-data-"))
    home = folder / "pf-home"  # a private prompt flow home with telemetry off: no network, import not timed
    home.mkdir()
    (home / "pf.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    os.environ.update({"PF_HOME_DIRECTORY": str(home), "PF_DISABLE_TRACING": "true",
                       "PF_TRACING_SKIP_LOCAL_SETUP": "true", "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
                       "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true"})
    _peer(folder / "warm-up")
    cases = {
        "60k keys, 1 line": json.dumps({f"k{i}": i for i in range(60_000)}) + "\n",
        "60k lines, 10 keys": "".join(json.dumps({f"k{j}": i for j in range(10)}) + "\n" for i in range(60_000)),
        "50 MB, 1 line": json.dumps({"text": "x" * 50_000_000}) + "\n",
    }
    print(f"{'case':22} {'llmops-ci':>12} {'prompt flow':>22} {'ideal':>12}")
    for name, text in cases.items():
        path = folder / f"{name.split(',')[0].replace(' ', '_')}.jsonl"
        path.write_text(text, encoding="utf-8")
        ours = _timed(lambda p=path: read_data(p))  # type: ignore[misc]
        peer = _timed(_peer(path))
        ideal = _timed(lambda p=path: _ideal(p))  # type: ignore[misc]
        print(f"{name:22} {ours:>12} {peer:>22} {ideal:>12}")


if __name__ == "__main__":
    main()
