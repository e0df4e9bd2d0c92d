"""The reference for side-by-side tests: prompt flow's own ``PFClient().run`` (what ``pf run create`` calls), in a
process of its own with a private home, on the same flows, data and connections as llmops-ci."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from llmops_ci.engines.artifacts import read_run
from llmops_ci.engines.promptflow.home import PFHome

SCRIPT = textwrap.dedent("""\
    import json
    import sys

    from promptflow.client import PFClient
    from promptflow.connections import AzureOpenAIConnection


    if __name__ == "__main__":
        spec = json.loads(sys.stdin.read())
        pf = PFClient()
        for conn in spec["connections"]:
            pf.connections.create_or_update(AzureOpenAIConnection(api_type="azure", **conn))
        for run in spec["runs"]:
            kwargs = {k: v for k, v in run.items() if v is not None}
            pf.run(stream=False, worker_count=spec["workers"], **kwargs)
    """)


def pf_runs(root: Path, runs: list[dict[str, Any]], connections: list[dict[str, Any]], workers: int = 4,
            environ: dict[str, str] | None = None) -> dict[str, tuple[list[tuple[str, Any]], dict[str, Any]]]:
    """``{run name: ([(status, outputs) per line], metrics)}``; ``runs`` are ``pf.run`` keyword arguments (``run``
    names an earlier run of the list)."""
    home = PFHome(root / "pf-home").prepare()
    script = root / "reference.py"
    script.write_text(SCRIPT, encoding="utf-8")
    # a short TMPDIR: multiprocessing's Unix sockets go there (a path over 107 bytes fails pf's pool)
    tmp = Path(tempfile.mkdtemp(prefix="pfr-"))
    env = home.environment(dict(os.environ if environ is None else environ), tmp)
    done = subprocess.run([sys.executable, str(script)], input=json.dumps(
        {"runs": runs, "connections": connections, "workers": workers}), text=True, env=env, cwd=root,
        capture_output=True, timeout=600, check=False)
    shutil.rmtree(tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = {}
    for run in runs:
        found = read_run(home.runs / run["name"])
        out[run["name"]] = ([(line.status, line.outputs) for line in found.lines], found.metrics)
    return out


def same(a: Any, b: Any) -> bool:
    """Equal with the same types at every depth and the same key order: ``1 == 1.0`` is not enough, a flow that shows
    the value (a prompt, an f-string) shows ``1`` and ``1.0``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
