"""Child process that serves a flow with prompt flow's own serving app (what ``pf flow serve`` runs).

Started by the local backend's deploy inside the private home, like ``pf_runner``; the request
(flow folder, port, connections with their secrets) comes on stdin. Connections are removed from
the private store when the process is told to stop.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from llmops_ci.engines.promptflow.runner import make_connection


def main() -> int:
    req: dict[str, Any] = json.loads(sys.stdin.read())
    from promptflow._sdk._utilities.serve_utils import serve_python_flow
    from promptflow.client import PFClient

    pf = PFClient()
    created = []
    for spec in req.get("provider_connections", []):
        pf.connections.create_or_update(make_connection(spec))
        created.append(spec["name"])

    def stop(signum: int, frame: Any) -> None:
        for name in created:
            pf.connections.delete(name)
        _remove_tmp(req.get("tmp"))  # a --keep server is stopped with `kill PID`: nothing else would remove it
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    flow = Path(req["flow"])
    try:
        serve_python_flow(flow_file_path=Path(req["entry"]), flow_dir=flow, port=int(req["port"]), host="127.0.0.1",
                          static_folder=None, config=None, environment_variables=req.get("environment_variables") or {},
                          init=None, skip_open_browser=True, engine="flask", chat_page_url="")
    finally:
        _remove_tmp(req.get("tmp"))
    return 0


def _remove_tmp(tmp: Any) -> None:
    """The private temp folder the parent made for this server (and only that: its name says so)."""
    if isinstance(tmp, str) and Path(tmp).name.startswith("llmops-serve-"):
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
