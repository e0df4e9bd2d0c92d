"""The executor ``python -m llmops_ci`` starts ahead: which command lines start it, and that it is used only when it
is exactly the process the step would start (else stopped, nothing of it left)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmops_ci.cli import DEFAULT_STATE_DIR, build_parser, settings_of
from llmops_ci.engines.promptflow import early
from llmops_ci.engines.promptflow.launch import executor_base
from tests.helpers.projects import RUN_PROJECT, Project, processes_using

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_leftover() -> Iterator[None]:
    yield
    early.discard()


@pytest.mark.parametrize(("argv", "wanted"), [
    (["pr"], (".llmops", 4)),
    (["batch-run", "--workers", "8", "--state-dir", "s"], ("s", 8)),
    (["--state-dir=out", "eval-run", "--workers=2", "--flow", "pr"], ("out", 2)),
    (["--config", "lint", "pr", "--backend", "local"], (".llmops", 4)),  # a value is not the step
    (["pr", "--llm-cache-base-only", "--llm-cache", "replay", "-v"], (".llmops", 4)),
])
def test_steps_that_run_flows_locally_start_it(argv: list[str], wanted: tuple[str, int]) -> None:
    found = early.guess(argv)
    assert found == (Path(wanted[0]).absolute(), wanted[1])


@pytest.mark.parametrize("argv", [
    [], ["lint"], ["gate"], ["test", "--flow", "x"], ["deploy"], ["init"], ["--flow", "batch-run", "lint"],
    ["pr", "--backend", "azureml"], ["batch-run", "--backend=databricks"], ["pr", "--dry-run"], ["pr", "-h"],
    ["batch-run", "--help"], ["--version"], ["pr", "--workers", "many"], ["--", "pr"],
])
def test_other_command_lines_do_not(argv: list[str]) -> None:
    assert early.guess(argv) is None


def test_the_guess_uses_the_command_lines_own_defaults() -> None:
    settings = settings_of(build_parser().parse_args(["batch-run"]))
    assert (settings.workers, str(DEFAULT_STATE_DIR)) == (early.DEFAULT_WORKERS, early.DEFAULT_STATE_DIR)


def test_the_guess_knows_every_option_that_takes_a_value() -> None:
    """A value the guess took for the step would only cost the early start; this keeps the two lists equal."""
    parser = build_parser()
    steps = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    taking = {option for step in early.RUN_STEPS for action in (*steps.choices[step]._actions, *parser._actions)
              if action.option_strings and action.nargs != 0 and not isinstance(action, argparse._SubParsersAction)
              for option in action.option_strings if option.startswith("--")}
    assert taking == early.VALUE_OPTIONS


def test_the_command_goes_through_the_early_start() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["llmops-ci"] == "llmops_ci.__main__:run"


def test_a_state_dir_that_cannot_be_made_is_left_to_the_step(tmp_path: Path) -> None:
    """The guess never fails the command: the step reports the bad state dir in its own words."""
    (tmp_path / "file").write_text("x", encoding="utf-8")
    before = set(Path(tempfile.gettempdir()).glob("llmops-pf-*"))
    early.start_early(["batch-run", "--state-dir", str(tmp_path / "file")], {"PATH": "/usr/bin:/bin"})
    assert not early.pending()
    assert set(Path(tempfile.gettempdir()).glob("llmops-pf-*")) == before  # its private home went too


def test_a_job_with_a_kept_executor_starts_none(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / ".executor.json").write_text('{"pid": 1}', encoding="utf-8")
    early.start_early(["eval-run", "--state-dir", str(tmp_path / "s")], {"PATH": "/usr/bin:/bin"})
    assert not early.pending()


def test_switched_off_by_its_variable(tmp_path: Path) -> None:
    early.start_early(["pr", "--state-dir", str(tmp_path / "s")], {"LLMOPS_CI_EARLY_EXECUTOR": "0"})
    assert not early.pending() and not (tmp_path / "s").exists()


@pytest.mark.executor
def test_one_started_for_another_environment_is_stopped_not_used(tmp_path: Path) -> None:
    state = tmp_path / "s"
    env = {"PATH": "/usr/bin:/bin", "SOME_SETTING": "a"}
    early.start_early(["batch-run", "--state-dir", str(state)], env)
    assert early.pending()
    home = early._early.home.root if early._early else None
    log = state.absolute() / "logs" / "executor.log"
    assert early.take(executor_base({**env, "SOME_SETTING": "b"}, state), 4, log) is None
    assert processes_using(state) == [] and home is not None and not home.exists()
    early.start_early(["batch-run", "--state-dir", str(state)], env)
    assert early.take(executor_base(env, state), 3, log) is None  # another --workers
    early.start_early(["batch-run", "--state-dir", str(state)], env)
    taken = early.take(executor_base(env, state), 4, log)
    assert taken is not None and taken.proc.poll() is None and not early.pending()
    taken.stop()
    assert processes_using(state) == [] and not taken.home.root.exists()


@pytest.mark.executor
def test_one_nobody_takes_is_gone_at_exit(tmp_path: Path) -> None:
    state = tmp_path / "s"
    early.start_early(["pr", "--state-dir", str(state)], {"PATH": "/usr/bin:/bin"})
    deadline = time.monotonic() + 30  # until it has exec'd, its /proc entry still shows this process's environment
    while not processes_using(state) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_using(state) != []
    early.discard()
    assert processes_using(state) == []


@pytest.mark.executor
def test_a_step_takes_it_over_and_answers_as_before(project: Callable[..., Project], clean_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    proj = project(RUN_PROJECT, base=False)
    for step in ("batch-run", "eval-run"):
        done = subprocess.run([sys.executable, "-m", "llmops_ci", step, "--flow", "echo", "--workers", "2", "-v"],
                              cwd=proj.root, env=clean_env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "the prompt flow executor started ahead" in done.stderr
        assert processes_using(tmp_path) == []
    summary = json.loads(proj.read(".llmops/summary.json"))["flows"]["echo"]
    assert (summary["run"]["lines_total"], summary["evaluations"]["match"]["metrics"]) == (4, {"match_rate": 0.75})
    # one executor per step, each loaded once: the early one was used, not started beside a second
    assert proj.read(".llmops/logs/executor.log").count("promptflow loaded") == 2


@pytest.mark.executor
def test_a_step_with_nothing_on_prompt_flow_stops_it(project: Callable[..., Project], clean_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    proj = project(RUN_PROJECT, base=False)
    proj.write("llmops.yaml", "version: 1\nflows: {}\n")
    done = subprocess.run([sys.executable, "-m", "llmops_ci", "pr", "--comment", "off"], cwd=proj.root,
                          env=clean_env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr
    assert processes_using(tmp_path) == []


@pytest.mark.executor
@pytest.mark.parametrize("argv", [["--bogus-option"], ["--workers", "0"], ["--state-dir="]])
def test_a_command_refused_before_its_step_leaves_no_state_dir(project: Callable[..., Project],
                                                               clean_env: dict[str, str], tmp_path: Path,
                                                               argv: list[str]) -> None:
    """The executor starts before the command line is checked; when the command line is refused, neither it
    nor the state dir and log it made for itself stay behind."""
    proj = project(RUN_PROJECT, base=False)
    done = subprocess.run([sys.executable, "-m", "llmops_ci", "pr", *argv], cwd=proj.root, env=clean_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert not (proj.root / ".llmops").exists()
    assert processes_using(tmp_path) == []
