"""Fixture factories: projects written to tmp_path, linted or run through the real CLI."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# a test that imports prompt flow in this process (its data reader, its connections) must not start Azure Monitor's
# configuration worker, which calls settings.sdk.monitor.azure.com: tests reach nothing but 127.0.0.1 (the executor
# and pf.run get the same settings from PFHome.environment)
os.environ.setdefault("APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED", "true")
os.environ.setdefault("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")

from llmops_ci.cli import main
from llmops_ci.core import redaction
from tests.fakes.openai import FakeOpenAI
from tests.helpers.config import Config
from tests.helpers.projects import BASE_PROJECT, CliResult, Project, processes_using, snapshot


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Project]:
    """A factory: ``project()`` writes the valid base project (or ``project(files)``) and chdirs into it;
    ``config=`` (a ``tests.helpers.config.Config``) writes its llmops.yaml (over any other)."""

    def make(files: dict[str, str] | None = None, base: bool = True, config: Config | None = None) -> Project:
        proj = Project(tmp_path)
        written = {**(BASE_PROJECT if base else {}), **(files or {}), **(config.files() if config else {})}
        for rel, text in written.items():
            proj.write(rel, text)
        monkeypatch.chdir(tmp_path)
        return proj

    return make


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Runs ``llmops-ci`` in-process through ``main`` with a clean CI environment."""
    for var in ("GITHUB_ACTIONS", "TF_BUILD"):
        monkeypatch.delenv(var, raising=False)

    def run(*argv: str) -> CliResult:
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors and --help/--version
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "TF_BUILD")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


__all__ = ["BASE_PROJECT", "CliResult", "Project", "processes_using", "snapshot"]


@pytest.fixture(autouse=True)
def _isolated_redaction() -> Iterator[None]:
    """Every test starts and ends with no registered secret: the registry is process-wide."""
    redaction.reset()
    yield
    redaction.reset()


# --- real runs ---------------------------------------------------------------------------------------

@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def run_env(monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI, tmp_path: Path) -> Iterator[FakeOpenAI]:
    """Connection settings pointing at the fake server; afterwards no process of the run may be left."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-" + "k" * 24)
    yield fake_openai
    # a killed process (SIGKILL to the executor's group) can take a moment to leave /proc on a loaded machine;
    # one still there after 10 s was left behind
    deadline = time.monotonic() + 10
    while (left := processes_using(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []
