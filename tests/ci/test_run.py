"""llmops_ci.ci run: the planned steps in one process, stopping at the first failure, and the outputs."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import ClassVar

import pytest

from llmops_ci.ci import dispatch, main
from llmops_ci.ci.baseline import save
from llmops_ci.ci.run import call_cli
from llmops_ci.engines.base import Backend
from llmops_ci.platforms.azure_devops import AzureDevOpsHost
from llmops_ci.platforms.github import GitHubHost
from llmops_ci.platforms.local import LocalHost

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "web-classification"


class Recorder:
    """Stands in for llmops_ci.cli.main: records each command line, answers with the given exit codes."""

    def __init__(self, codes: dict[str, int] | None = None) -> None:
        self.codes = codes or {}
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> int:
        self.calls.append(argv)
        return self.codes.get(argv[0], 0)


def github_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    output = tmp_path / "github_output"
    output.touch()
    return {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push", "GITHUB_OUTPUT": str(output), **extra}


def outputs(environ: dict[str, str]) -> dict[str, str]:
    lines = Path(environ["GITHUB_OUTPUT"]).read_text().splitlines()
    return dict(line.partition("=")[::2] for line in lines)  # the last value wins, as on GitHub


def test_stops_at_the_first_failing_step_with_its_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    environ = github_env(tmp_path, LLMOPS_STEPS="batch-run eval-run gate register deploy")
    out = io.StringIO()
    llmops = Recorder({"gate": 1})
    assert dispatch("run", environ, GitHubHost(environ, out), call=llmops) == 1
    assert [argv[0] for argv in llmops.calls] == ["batch-run", "eval-run", "gate"]
    assert outputs(environ)["exit-code"] == "1" and outputs(environ)["passed"] == "false"
    assert "llmops-ci gate exited with 1 (a check failed)" in out.getvalue()
    shown = [line.split()[1] for line in out.getvalue().splitlines()
             if line.startswith("llmops-ci ") and "exited" not in line]
    assert shown == ["batch-run", "eval-run", "gate"]


def test_a_state_dir_that_cannot_be_one_stops_before_any_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file\n", encoding="utf-8")
    environ = github_env(tmp_path, LLMOPS_STEPS="batch-run eval-run gate", LLMOPS_STATE_DIR="taken/state")
    out = io.StringIO()
    llmops = Recorder()
    assert dispatch("run", environ, GitHubHost(environ, out), call=llmops) == 2
    assert llmops.calls == []
    assert "--state-dir taken/state: cannot be made: taken is a file" in out.getvalue()
    assert (tmp_path / "taken").read_text(encoding="utf-8") == "a file\n"


def test_a_crash_is_exit_4_and_never_becomes_the_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    state = tmp_path / ".llmops"
    state.mkdir()
    (state / "summary.json").write_text(json.dumps({"schema": "llmops-ci/summary@1", "flows": {}}))
    environ = github_env(tmp_path, LLMOPS_STEPS="pr")
    out = io.StringIO()
    assert dispatch("run", environ, GitHubHost(environ, out), call=Recorder({"pr": 4})) == 4
    assert "internal error in llmops-ci" in out.getvalue()
    assert outputs(environ)["exit-code"] == "4" and outputs(environ)["passed"] == "false"
    saved = tmp_path / "baseline"
    env = {**environ, "LLMOPS_EXIT_CODE": outputs(environ)["exit-code"], "LLMOPS_STATE_DIR": str(state),
           "LLMOPS_BASELINE_OUT": str(saved)}
    assert save(env, GitHubHost(env, out)) == 0
    assert not saved.exists()
    assert outputs(environ)["baseline-ready"] == "false"
    assert "exited 4 (internal error in llmops-ci): its results are not kept as the baseline" in out.getvalue()


def test_passed_follows_the_summary_when_every_step_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A later step that exits 0 (comment) must not turn a failed gate into passed=true."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".llmops").mkdir()
    (tmp_path / ".llmops" / "summary.json").write_text(json.dumps(
        {"schema": "llmops-ci/summary@1", "flows": {"a": {"gate": {"passed": False, "checks": []}}}}))
    environ = github_env(tmp_path, LLMOPS_STEPS="comment")
    assert dispatch("run", environ, GitHubHost(environ, io.StringIO()), call=Recorder()) == 0
    assert outputs(environ)["passed"] == "false"
    assert outputs(environ)["summary"] == str(tmp_path / ".llmops" / "summary.json")


def test_azure_outputs_and_the_artifact_ignore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    environ = {"TF_BUILD": "True", "LLMOPS_STEPS": "lint", "LLMOPS_STATE_DIR": str(tmp_path / "state")}
    out = io.StringIO()
    assert dispatch("run", environ, AzureDevOpsHost(environ, out), call=Recorder({"lint": 2})) == 2
    log = out.getvalue()
    assert "##vso[task.setvariable variable=passed;isOutput=true]false" in log
    assert "##vso[task.setvariable variable=exitCode;isOutput=true]2" in log
    assert "##vso[task.setvariable variable=LLMOPS_EXIT_CODE]2" in log
    # the private prompt flow home (connections, keyring) stays out of the published state dir
    assert (tmp_path / "state" / ".artifactignore").read_text().splitlines() == ["pf-home/"]


def test_refuses_pull_request_target_before_anything_runs(tmp_path: Path) -> None:
    environ = github_env(tmp_path, GITHUB_EVENT_NAME="pull_request_target")
    out = io.StringIO()
    llmops = Recorder()
    assert dispatch("run", environ, GitHubHost(environ, out), call=llmops) == 2
    assert llmops.calls == []
    assert out.getvalue().startswith("::error title=llmops-ci::llmops-ci does not run on pull_request_target")


def test_working_directory_is_entered_and_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path)
    seen: list[str] = []

    def llmops(argv: list[str]) -> int:
        seen.append(os.getcwd())
        return 0

    environ = {"LLMOPS_STEPS": "lint", "LLMOPS_WORKING_DIRECTORY": "project"}
    assert dispatch("run", environ, LocalHost(environ, io.StringIO()), call=llmops) == 0
    assert seen == [str(tmp_path / "project")] and os.getcwd() == str(tmp_path)
    out = io.StringIO()
    environ["LLMOPS_WORKING_DIRECTORY"] = "missing"
    assert dispatch("run", environ, LocalHost(environ, out), call=llmops) == 2
    assert "LLMOPS_WORKING_DIRECTORY: 'missing' is not a folder" in out.getvalue()


def test_untrusted_values_cannot_start_a_workflow_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    environ = github_env(tmp_path, LLMOPS_STEPS="lint", LLMOPS_CONFIG="x.yaml\n::error::forged\n##vso[task.complete]")
    out = io.StringIO()
    dispatch("run", environ, GitHubHost(environ, out), call=Recorder())
    lines = out.getvalue().splitlines()
    assert not any(line.startswith("::error::") or "##vso[" in line for line in lines), lines


def test_the_real_llmops_ci_runs_in_process_step_after_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(EXAMPLE, tmp_path / "project", ignore=shutil.ignore_patterns(".llmops", "__pycache__"))
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith(("GITHUB_", "TF_BUILD", "SYSTEM_", "BUILD_"))]:
        monkeypatch.delenv(name)
    environ = {"LLMOPS_STEPS": "lint, comment", "LLMOPS_WORKING_DIRECTORY": "project", "LLMOPS_COMMENT": "false"}
    out = io.StringIO()
    assert dispatch("run", environ, LocalHost(environ, out)) == 0, out.getvalue() + capsys.readouterr().err
    log = out.getvalue()
    assert "llmops-ci lint --config llmops.yaml" in log and "llmops-ci comment --config llmops.yaml" in log
    assert "passed: true" in log and "exit-code: 0" in log
    assert (tmp_path / "project" / ".llmops" / "comment.md").is_file()


def test_call_cli_turns_argparse_exits_into_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert call_cli(["lint", "--format", "no-such-format"]) == 2
    assert call_cli(["--version"]) == 0
    assert "llmops-ci" in capsys.readouterr().out


def test_main_refuses_an_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy-everything"]) == 2
    assert "usage: python -m llmops_ci.ci [run|publish|baseline|prepare]" in capsys.readouterr().out


# -- one job scope: the steps of a ci run share their run backends (one warm executor) ---------------------------


class FakeBackend(Backend):
    """Stands in for the local run backend: counts how often it is built and closed."""

    built: ClassVar[list[FakeBackend]] = []

    def __init__(self, ctx: object) -> None:
        self.closed = 0
        FakeBackend.built.append(self)

    def close(self) -> None:
        self.closed += 1


def _context(state_dir: Path, environ: dict[str, str]) -> object:
    import sys

    from llmops_ci.core.http import Http
    from llmops_ci.platforms import PLATFORMS
    from llmops_ci.steps import Context

    return Context(platform=PLATFORMS["local"], environ=environ, stdout=sys.stdout, stderr=sys.stderr,
                   state_dir=state_dir, http=Http())


@pytest.fixture
def fake_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[object, Path]:
    from llmops_ci import runs
    from llmops_ci.project.loaded import load_project

    monkeypatch.setitem(runs.BACKENDS, "local", FakeBackend)
    FakeBackend.built = []
    (tmp_path / "llmops.yaml").write_text("version: 1\nflows: {}\n", encoding="utf-8")
    return load_project(tmp_path / "llmops.yaml"), tmp_path


def test_steps_of_one_job_share_one_backend_closed_at_the_end(fake_backends: tuple[object, Path]) -> None:
    from llmops_ci.steps import job_scope, run_context

    project, tmp_path = fake_backends

    def step(state: str, environ: dict[str, str]) -> object:  # what each step's cli.main does: its own Context
        ctx = _context(tmp_path / state, environ)
        with ctx.backend_scope():  # type: ignore[attr-defined]
            return run_context("local", ctx, project).backend  # type: ignore[arg-type]

    with job_scope():
        first, second = step("s", {"A": "1"}), step("s", {"A": "1"})
        assert first is second and first.closed == 0  # type: ignore[attr-defined]
        # another state dir or environment is another job's business: a backend of its own
        assert step("t", {"A": "1"}) is not first and step("s", {"A": "2"}) is not first
    assert len(FakeBackend.built) == 3 and all(b.closed == 1 for b in FakeBackend.built)
    # without a job scope each step closes its own, as before
    alone = step("s", {"A": "1"})
    assert alone is not first and alone.closed == 1  # type: ignore[attr-defined]


def test_sigterm_between_steps_is_143_and_stops_the_shared_executor(fake_backends: tuple[object, Path],
                                                                    tmp_path: Path) -> None:
    import signal

    from llmops_ci.ci.run import run_commands
    from llmops_ci.steps import run_context

    project, _ = fake_backends
    before = signal.getsignal(signal.SIGTERM)

    def call(argv: list[str]) -> int:
        if argv[0] == "batch-run":  # the step built the backend (its executor), then the job is cancelled
            ctx = _context(tmp_path / "s", {})
            with ctx.backend_scope():  # type: ignore[attr-defined]
                run_context("local", ctx, project)  # type: ignore[arg-type]
            return 0
        os.kill(os.getpid(), signal.SIGTERM)
        return 0

    out = io.StringIO()
    code = run_commands([["batch-run"], ["eval-run"], ["gate"]], LocalHost({}, out), call)
    assert code == 143 and "terminated" in out.getvalue()
    assert [b.closed for b in FakeBackend.built] == [1]
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.executor
def test_separate_steps_in_one_ci_run_load_prompt_flow_once_and_match_pr(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """batch-run, eval-run and gate as separate steps of one ``ci run`` share one warm executor (one prompt flow
    import), leave no process behind, and give what ``pr`` gives on the same project (replayed from its cassettes)."""
    from tests.fakes.openai import FakeOpenAI  # noqa: F401  - offline: the cassettes answer every call

    for name in [k for k in os.environ if k.startswith(("GITHUB_", "TF_BUILD", "SYSTEM_", "BUILD_", "OPENAI_"))]:
        monkeypatch.delenv(name)
    results = {}
    for label, steps in (("steps", "batch-run, eval-run, gate"), ("pr", "pr")):
        shutil.copytree(EXAMPLE, tmp_path / label, ignore=shutil.ignore_patterns(".llmops", "__pycache__"))
        environ = {"LLMOPS_STEPS": steps, "LLMOPS_WORKING_DIRECTORY": str(tmp_path / label),
                   "LLMOPS_COMMENT": "false", "LLMOPS_FLOWS": "classify"}
        out = io.StringIO()
        assert dispatch("run", environ, LocalHost(environ, out)) == 0, out.getvalue() + capsys.readouterr().err
        state = tmp_path / label / ".llmops"
        loads = [x for x in (state / "logs" / "executor.log").read_text().splitlines() if "promptflow loaded" in x]
        assert len(loads) == 1, loads
        assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and p.name != str(os.getpid())
                    and _mentions(p, str(state))]
        flow = json.loads((state / "summary.json").read_text())["flows"]["classify"]
        lines = [(x["line"], x["status"], x["outputs"], x["tokens"]) for x in map(
            json.loads, (state / "runs" / "classify" / "lines.jsonl").read_text().splitlines())]
        results[label] = (
            {k: flow["run"][k] for k in ("status", "lines_total", "lines_failed", "tokens", "flow_hash", "data_hash")},
            {name: (e["status"], e["metrics"], e["lines_total"], e["lines_failed"])
             for name, e in flow["evaluations"].items()},
            [(c["metric"], c["value"], c["passed"]) for c in flow["gate"]["checks"] if "latency" not in c["metric"]],
            lines)
    assert results["steps"] == results["pr"]
    assert results["pr"][1] and results["pr"][2] and len(results["pr"][3]) > 40


def _mentions(proc: Path, needle: str) -> bool:
    try:
        return needle.encode() in (proc / "environ").read_bytes() + (proc / "cmdline").read_bytes()
    except OSError:
        return False
