"""The local release proves the new slot is the one answering, and stops what --keep left serving."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llmops_ci.releases.local import LocalRelease
from llmops_ci.releases.slots import listener, session_pids
from tests.helpers.projects import CliResult
from tests.releases.test_release import example  # noqa: F401  (the fixture)


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        return None


def test_an_impostor_on_the_port_does_not_pass_for_the_new_slot() -> None:
    impostor = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    port = impostor.server_address[1]
    slot = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True, text=True)
    try:
        assert listener(port) is not None and listener(port) not in session_pids(slot.pid)
        failure = LocalRelease._wait_healthy(f"http://127.0.0.1:{port}", slot)
        assert failure is not None and "not by the new slot" in failure
    finally:
        slot.kill()
        slot.wait()
        impostor.shutdown()
        impostor.server_close()


def test_listener_finds_the_owner(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    try:
        import os

        assert listener(server.server_address[1]) == os.getpid()
    finally:
        server.server_close()
    assert listener(server.server_address[1]) is None


@pytest.mark.executor
def test_keep_then_deploy_again_stops_the_kept_slot(cli: Any, example: Path) -> None:  # noqa: F811
    run: CliResult = cli("register", "--flow", "classify")
    assert run.code == 0, run.err
    first = cli("deploy", "--flow", "classify", "--keep")
    assert first.code == 0, first.err
    state = json.loads((example / ".llmops" / "endpoints" / "web-classification-ep.json").read_text())
    kept = state["slots"][state["serving"]]
    assert isinstance(kept["pid"], int) and kept["port"] and kept["url"].endswith(str(kept["port"]))
    second = cli("deploy", "--flow", "classify")
    assert second.code == 0, second.err
    assert "which --keep left serving" in second.err
    proc = Path(f"/proc/{kept['pid']}")
    deadline = time.monotonic() + 10  # the stopped server cleans up its temp folder on the way out
    while proc.exists() and b"zombie" not in (proc / "status").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not proc.exists() or b"zombie" in (proc / "status").read_bytes()


@pytest.mark.executor
def test_killing_a_kept_server_leaves_no_temp_folder(cli: Any, example: Path) -> None:  # noqa: F811
    import os
    import signal
    import time

    assert cli("register", "--flow", "classify").code == 0
    first = cli("deploy", "--flow", "classify", "--keep")
    assert first.code == 0, first.err
    state = json.loads((example / ".llmops" / "endpoints" / "web-classification-ep.json").read_text())
    kept = state["slots"][state["serving"]]
    tmp = Path(kept["tmp"])
    assert tmp.name.startswith("llmops-serve-") and tmp.is_dir()
    os.kill(kept["pid"], signal.SIGTERM)  # what the log tells the user to do
    deadline = time.monotonic() + 30
    while tmp.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not tmp.exists()
