"""A new CI platform is one module and one registry line: this module is "ToyCI" (a platform and its host), the
``toy_registered`` fixture is the registry line. It is detected from its own environment, its credential is kept
from flow code, and ``llmops-ci comment`` publishes through it end to end, over HTTP to a loopback comment API."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

import pytest

from llmops_ci.core import child_env, log
from llmops_ci.core.http import Http
from llmops_ci.core.safe_text import log_safe
from llmops_ci.platforms import PLATFORMS, Host, Publication, Published, detect, detect_host, register_credentials
from llmops_ci.report.comment import MARKER, outcome, render
from tests.helpers.projects import CliResult

TOKEN = "toy-ci-token-0123456789"


class ToyHost:
    name = "toy"
    names: Mapping[str, str] = {"steps": "steps", "changed_since": "changed_since", "llm_cache": "llm_cache",
                                "working_directory": "working_directory"}
    no_baseline = "no baseline of the target branch yet"
    state_dir_files: Mapping[str, str] = {}

    def __init__(self, environ: Mapping[str, str], out: TextIO) -> None:
        self.environ, self.out = environ, out

    def refusal(self) -> str | None:
        return None

    def is_pull_request(self) -> bool:
        return self.environ.get("TOY_CI_PR", "").isdigit()

    def pull_request_base(self) -> str | None:
        return self.environ.get("TOY_CI_BASE") if self.is_pull_request() else None

    def pull_request_number(self) -> int | None:
        return int(self.environ["TOY_CI_PR"]) if self.is_pull_request() else None

    def find_pull_request(self, http: Http) -> int | None:
        return self.pull_request_number()

    def comment_unsupported(self) -> str | None:
        return None

    def message(self, level: str, text: str) -> None:
        self.out.write(f"[toy {level}] {log_safe(text)}\n")

    def set_output(self, name: str, value: str) -> None:
        self.message("output", f"{name}={value}")

    def published_passed(self) -> bool:
        return False


class ToyFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"[toy {record.levelname.lower()}] {log_safe(record.getMessage())}"


class ToyCI:
    name = "toy"
    ends_job_processes = False
    credentials: frozenset[str] = frozenset({"TOY_CI_TOKEN"})
    credential_prefixes: tuple[str, ...] = ("TOY_CI_SECRET_",)

    def detected(self, environ: Mapping[str, str]) -> bool:
        return environ.get("TOY_CI") == "true"

    def host(self, environ: Mapping[str, str], out: TextIO) -> Host:
        return ToyHost(environ, out)

    def build_tags(self, environ: Mapping[str, str]) -> dict[str, str]:
        return {"ci.build": environ["TOY_CI_BUILD"]} if environ.get("TOY_CI_BUILD") else {}

    def formatter(self) -> logging.Formatter:
        return ToyFormatter()

    def mask(self, secret: str, out: TextIO) -> None:
        log.command(out, f"[toy mask] {secret}\n", secret=True)

    def publish(self, pub: Publication, environ: Mapping[str, str], http: Http, out: TextIO) -> Published:
        result = Published(outcome(pub.summary).passed)
        pr = pub.pr or ToyHost(environ, out).pull_request_number()
        if pub.comment and pr is not None:
            created = http.json("POST", f"{environ['TOY_CI_API']}/prs/{pr}/comments",
                                headers={"Authorization": f"Bearer {environ['TOY_CI_TOKEN']}"},
                                json={"body": render(pub.summary, limit=20_000)})
            result.comment_url, result.comment = str(created["url"]), "created"
        return result


class ToyAPI(ThreadingHTTPServer):
    """The toy CI's comment API on 127.0.0.1: ``POST /prs/<n>/comments`` with a bearer token."""

    def __init__(self) -> None:
        self.comments: dict[int, list[str]] = {}
        self.authorization: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: ToyAPI

    def do_POST(self) -> None:
        parts = self.path.strip("/").split("/")
        body: dict[str, Any] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.authorization.append(self.headers.get("Authorization", ""))
        if len(parts) != 3 or parts[0] != "prs" or not parts[1].isdigit() or parts[2] != "comments":
            self.send_response(404)
            self.end_headers()
            return
        number = int(parts[1])
        self.server.comments.setdefault(number, []).append(body["body"])
        answer = json.dumps({"url": f"{self.server.url}/prs/{number}#c{len(self.server.comments[number])}"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def toy_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PLATFORMS, "toy", ToyCI())  # the registry line
    # what the registry does at startup for its platforms; undone with the fixture
    for name in ("CI_CREDENTIALS", "CI_PREFIXES", "_RUNNERS"):
        monkeypatch.setattr(child_env, name, type(getattr(child_env, name))(getattr(child_env, name)))
    register_credentials()


@pytest.fixture
def toy_api() -> Iterator[ToyAPI]:
    server = ToyAPI()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.usefixtures("toy_registered")
def test_detected_from_its_environment() -> None:
    assert detect("auto", {"TOY_CI": "true"}).name == "toy"
    assert detect("auto", {}).name == "local"
    assert detect("toy", {}).name == "toy"
    assert isinstance(detect_host({"TOY_CI": "true", "TOY_CI_PR": "3"}, io.StringIO()), ToyHost)
    assert detect_host({"TOY_CI": "true", "TOY_CI_PR": "3"}, io.StringIO()).pull_request_number() == 3


@pytest.mark.usefixtures("toy_registered")
def test_its_credential_is_kept_from_flow_code_and_out_of_the_log() -> None:
    env = child_env.child_environment({"TOY_CI_TOKEN": TOKEN, "TOY_CI_SECRET_KEY": TOKEN, "KEEP": "1"})
    assert env == {"KEEP": "1"}
    assert child_env.ci_credential_refs("key: ${env:TOY_CI_TOKEN}") == ["TOY_CI_TOKEN"]


def test_comment_publishes_through_it(cli: Callable[..., CliResult], toy_registered: None, toy_api: ToyAPI,
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"TOY_CI": "true", "TOY_CI_PR": "7", "TOY_CI_API": toy_api.url, "TOY_CI_TOKEN": TOKEN}.items():
        monkeypatch.setenv(name, value)
    state = tmp_path / ".llmops"
    state.mkdir()
    (state / "summary.json").write_text(json.dumps({"schema": "llmops-ci/summary@1", "lint": {"findings": [
        {"rule": "input-unused", "severity": "warning", "path": "flows/a/flow.dag.yaml", "line": 3,
         "message": "input 'x' is not used"}]}}))
    monkeypatch.chdir(tmp_path)
    result = cli("comment")  # --platform auto
    assert result.code == 0, result.err
    (body,) = toy_api.comments[7]
    assert body.startswith(MARKER) and "input 'x' is not used" in body
    assert toy_api.authorization == [f"Bearer {TOKEN}"]
    assert f"[toy info] comment created: {toy_api.url}/prs/7#c1" in result.err  # the log went through its formatter
    assert TOKEN not in result.out + result.err
