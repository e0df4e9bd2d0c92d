"""One warm executor for the steps of a CI job: kept by batch-run, used by eval-run only when it is exactly the
process eval-run would start, ended by the job's last step or after its idle time, and never anything else."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.core.errors import UsageError
from llmops_ci.engines.promptflow import linger
from llmops_ci.engines.promptflow.handle import Worker
from llmops_ci.engines.promptflow.home import PFHome
from llmops_ci.engines.promptflow.launch import executor_base
from llmops_ci.platforms import PLATFORMS
from tests.helpers.projects import CHAT_PROMPTY, RUN_PROJECT, CliResult, Project, interrupt, processes_using, running


@pytest.mark.parametrize(("value", "on_ci", "wanted"), [
    (None, False, 0.0), (None, True, linger.CI_KEEP_S), ("0", True, 0.0), ("45", False, 45.0), (" 12.5 ", False, 12.5),
    ("", True, linger.CI_KEEP_S),
])
def test_how_long_an_executor_waits_for_the_next_step(value: str | None, on_ci: bool, wanted: float) -> None:
    environ = {} if value is None else {linger.KEEP_VAR: value}
    assert linger.keep_seconds(environ, on_ci) == wanted


@pytest.mark.parametrize("value", ["-3", "soon", "nan", "inf", "1e999"])
def test_a_wait_that_is_not_a_number_of_seconds_is_refused(value: str) -> None:
    with pytest.raises(UsageError, match=f"LLMOPS_CI_KEEP_EXECUTOR='{value}' is not a number of seconds"):
        linger.keep_seconds({linger.KEEP_VAR: value}, True)


def test_a_bad_wait_stops_the_step_with_exit_2(project: Callable[..., Project], cli: Callable[..., CliResult],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    project(RUN_PROJECT, base=False)
    monkeypatch.setenv(linger.KEEP_VAR, "soon")
    result = cli("batch-run", "--flow", "echo")
    assert result.code == 2 and "Traceback" not in result.err
    assert "LLMOPS_CI_KEEP_EXECUTOR='soon' is not a number of seconds" in result.err


def test_only_ci_systems_that_end_a_jobs_processes_keep_one_by_default() -> None:
    assert {name: p.ends_job_processes for name, p in PLATFORMS.items()} == {
        "github": True, "azure-devops": True, "local": False}


def test_a_pointer_to_anything_but_this_state_dirs_executor_is_not_used(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (os.getpid(), sleeper.pid, 1, -5, "12", None):
            (state / linger.POINTER).write_text(json.dumps({"pid": pid}), encoding="utf-8")
            assert linger.find(state) is None
            assert not (state / linger.POINTER).exists()  # and the pointer is gone
        (state / linger.POINTER).write_text("not json", encoding="utf-8")
        linger.stop_kept(state)
        assert sleeper.poll() is None and not (state / linger.POINTER).exists()  # nothing was signalled
    finally:
        sleeper.kill()
        sleeper.wait()


def write_flex(root: Path) -> tuple[Path, Path]:
    (root / "flex").mkdir(parents=True)
    (root / "flex" / "flow.flex.yaml").write_text("entry: echo:run\n", encoding="utf-8")
    (root / "flex" / "echo.py").write_text("import os\n\n\ndef run(text: str) -> str:\n"
                                           "    return text + os.environ.get('SUFFIX', '')\n", encoding="utf-8")
    data = root / "data.jsonl"
    data.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    return root / "flex" / "flow.flex.yaml", data


def job(flow: Path, data: Path, **extra: object) -> dict[str, object]:
    return {"op": "run", "tag": "t", "name": "t", "kind": "flex", "flow": str(flow), "working_dir": str(flow.parent),
            "data": str(data), "base": None, "column_mapping": {"text": "${data.text}"}, "line_timeout_sec": 30,
            "environment_variables": {}, "provider_connections": [], **extra}


@pytest.mark.executor
def test_kept_between_steps_then_stopped_by_the_last(tmp_path: Path) -> None:
    state = tmp_path / "state"
    flow, data = write_flex(tmp_path)
    env = executor_base({"PATH": "/usr/bin:/bin"}, state)
    log = state / "logs" / "executor.log"
    first = Worker(PFHome(tmp_path / "home").prepare(), env, 4, log)
    assert [x["outputs"] for x in first.call(job(flow, data), lambda n: None)["lines"]] == [
        {"output": "a"}, {"output": "b"}]
    assert first.close(keep_s=60, state_dir=state) is True
    kept = linger.find(state)
    assert kept is not None and kept.pid == first.pid and kept.home == tmp_path / "home"
    assert oct(kept.tmp.stat().st_mode & 0o777) == "0o700"
    assert json.loads((state / linger.POINTER).read_text(encoding="utf-8")) == {"pid": kept.pid}  # nothing else
    assert not kept.matches(linger.fingerprint({**env, "OTHER": "1"}, 4, log))
    assert not kept.matches(linger.fingerprint(env, 2, log))
    assert kept.matches(linger.fingerprint(env, 4, log))

    sock = kept.connect()
    assert sock is not None
    second = Worker(PFHome(kept.home), env, 4, log, kept=(kept, sock))
    outcome = second.call(job(flow, data, environment_variables={"SUFFIX": "!"}), lambda n: None)
    assert [x["outputs"] for x in outcome["lines"]] == [{"output": "a!"}, {"output": "b!"}]
    assert second.close(state_dir=state) is False
    assert processes_using(state) == [] and not (state / linger.POINTER).exists()
    assert not kept.tmp.exists() and not kept.home.exists()
    assert log.read_text(encoding="utf-8").count("promptflow loaded") == 1


@pytest.mark.executor
def test_one_nobody_comes_back_to_ends_and_leaves_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    flow, data = write_flex(tmp_path)
    # named as the executor's own home is: it removes nothing else
    worker = Worker(PFHome(tmp_path / "llmops-pf-home").prepare(), executor_base({"PATH": "/usr/bin:/bin"}, state),
                    4, state / "logs" / "executor.log")
    worker.call(job(flow, data), lambda n: None)
    assert worker.close(keep_s=0.5, state_dir=state) is True
    kept = linger.find(state)
    assert kept is not None
    deadline = time.monotonic() + 20
    while linger.alive(kept.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_using(state) == []
    assert not (state / linger.POINTER).exists() and not kept.tmp.exists() and not kept.home.exists()


@pytest.mark.executor
def test_an_executor_that_cannot_listen_runs_and_then_ends_with_its_step(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)  # its TMPDIR: too long a path for a Unix socket
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    state = tmp_path / "state"
    flow, data = write_flex(tmp_path)
    home = PFHome(tmp_path / "llmops-pf-home").prepare()
    worker = Worker(home, executor_base({"PATH": "/usr/bin:/bin"}, state), 4, state / "logs" / "executor.log")
    assert [x["outputs"] for x in worker.call(job(flow, data), lambda n: None)["lines"]] == [
        {"output": "a"}, {"output": "b"}]
    worker.close(keep_s=60, state_dir=state)
    deadline = time.monotonic() + 20
    while processes_using(state) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_using(state) == [] and linger.find(state) is None
    assert not home.root.exists() and list(deep.iterdir()) == []
    assert "cannot wait for a later step" in (state / "logs" / "executor.log").read_text(encoding="utf-8")


@pytest.mark.executor
def test_a_step_that_goes_mid_run_leaves_nothing_running(tmp_path: Path) -> None:
    """A kept executor whose caller vanished (SIGKILL) while a job ran stops that job: nobody can be told its
    results; it then waits for the next step as usual."""
    state = tmp_path / "state"
    (tmp_path / "flex").mkdir()
    (tmp_path / "flex" / "flow.flex.yaml").write_text("entry: slow:run\n", encoding="utf-8")
    (tmp_path / "flex" / "slow.py").write_text("import time\n\n\ndef run(text: str) -> str:\n"
                                               "    time.sleep(600)\n    return text\n", encoding="utf-8")
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "a"}\n', encoding="utf-8")
    worker = Worker(PFHome(tmp_path / "home").prepare(), executor_base({"PATH": "/usr/bin:/bin"}, state), 4,
                    state / "logs" / "executor.log")
    worker.call(job(tmp_path / "flex" / "flow.flex.yaml", data, line_timeout_sec=1), lambda n: None)
    assert worker.close(keep_s=60, state_dir=state) is True
    kept = linger.find(state)
    assert kept is not None
    sock = kept.connect()
    assert sock is not None
    sock.sendall(json.dumps({**job(tmp_path / "flex" / "flow.flex.yaml", data), "id": 1}).encode() + b"\n")
    time.sleep(2)
    assert len(processes_using(state)) > 1  # the job and its line are running
    sock.close()
    deadline = time.monotonic() + 10
    while len(processes_using(state)) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(processes_using(state)) == 1  # the executor alone, waiting
    linger.stop_kept(state)
    assert processes_using(state) == [] and not kept.home.exists()


@pytest.mark.executor
def test_connections_stored_for_a_step_do_not_wait_with_the_executor(tmp_path: Path, fake_openai: object) -> None:
    state = tmp_path / "state"
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "chat.prompty").write_text(CHAT_PROMPTY, encoding="utf-8")
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "hello"}\n', encoding="utf-8")
    home = PFHome(tmp_path / "home").prepare()
    worker = Worker(home, executor_base({"PATH": "/usr/bin:/bin"}, state), 4, state / "logs" / "executor.log")
    conn = {"name": "openai", "type": "open_ai",
            "values": {"api_key": "sk-secret", "base_url": f"{fake_openai.url}/v1"}}
    outcome = worker.call({**job(tmp_path / "p" / "chat.prompty", data), "kind": "prompty",
                           "provider_connections": [conn]}, lambda n: None)
    assert [x["outputs"] for x in outcome["lines"]] == [{"output": "ECHO: hello"}]
    assert worker.close(keep_s=60, state_dir=state) is True
    time.sleep(1)  # the executor removes them as soon as the step goes
    try:
        store = sqlite3.connect(home.root / "pf.sqlite")
        rows = store.execute("SELECT connectionName FROM connection").fetchall()
        store.close()
        assert rows == []
    finally:
        linger.stop_kept(state)
    assert processes_using(state) == []


@pytest.mark.executor
def test_steps_as_separate_processes_share_one_executor(project: Callable[..., Project], clean_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    proj = project(RUN_PROJECT, base=False)
    env = {**clean_env, linger.KEEP_VAR: "120"}

    def step(*argv: str, environ: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "llmops_ci", *argv, "--flow", "echo", "-v"], cwd=proj.root,
                              env=environ, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done

    step("batch-run")
    assert len(processes_using(tmp_path)) == 1  # the executor, waiting for the next step
    assert "kept by an earlier step" in step("eval-run").stderr
    step("gate")
    assert processes_using(tmp_path) == [] and not proj.path(".llmops/.executor.json").exists()
    summary = json.loads(proj.read(".llmops/summary.json"))["flows"]["echo"]
    assert summary["evaluations"]["match"]["metrics"] == {"match_rate": 0.75}
    assert proj.read(".llmops/logs/executor.log").count("promptflow loaded") == 1

    # another environment for the next step: the kept executor is not that step's; a new one runs it
    step("batch-run")
    assert "kept by an earlier step" not in step("eval-run", environ={**env, "SOME_SETTING": "x"}).stderr
    step("gate")
    assert processes_using(tmp_path) == []
    assert json.loads(proj.read(".llmops/summary.json"))["flows"]["echo"]["evaluations"]["match"]["metrics"] == {
        "match_rate": 0.75}


@pytest.mark.executor
def test_a_step_cancelled_on_a_kept_executor_leaves_nothing(project: Callable[..., Project],
                                                           clean_env: dict[str, str], tmp_path: Path) -> None:
    """SIGTERM (a cancelled CI job) to a step running on the executor an earlier step kept: stopped as today."""
    proj = project(RUN_PROJECT, base=False)
    env = {**clean_env, linger.KEEP_VAR: "120"}
    argv = [sys.executable, "-m", "llmops_ci", "batch-run", "--flow", "echo", "-v"]
    done = subprocess.run(argv, cwd=proj.root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    proj.write("data/echo.jsonl", '{"text": "sleep", "expected": "SLEEP"}\n' * 4)  # 4 s a line
    with running(argv, cwd=proj.root, env=env) as proc:
        deadline = time.monotonic() + 60
        while len(processes_using(tmp_path)) < 3 and time.monotonic() < deadline:  # executor, job, lines
            time.sleep(0.1)
        time.sleep(0.5)
        out = interrupt(proc, signal.SIGTERM)
    assert proc.returncode == 143, out
    assert "kept by an earlier step" in out and "Traceback" not in out
    deadline = time.monotonic() + 10
    while processes_using(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_using(tmp_path) == [] and not proj.path(".llmops/.executor.json").exists()


@pytest.mark.executor
def test_a_kept_executor_a_step_cannot_take_is_stopped_not_orphaned(tmp_path: Path) -> None:
    """A step whose backend has a home already (a pf.run fallback flow ran first) starts its own executor; the
    kept one would lose the state dir's pointer to it and wait, unreachable, until its idle time: it is stopped."""
    from llmops_ci.engines.promptflow.executor import LocalBackend

    state = tmp_path / "state"
    environ = {"PATH": "/usr/bin:/bin"}
    first = Worker(PFHome(tmp_path / "home").prepare(), executor_base(environ, state), 4,
                   state / "logs" / "executor.log")
    flow, data = write_flex(tmp_path)
    first.call(job(flow, data), lambda n: None)
    assert first.close(keep_s=120, state_dir=state) is True
    kept = linger.find(state)
    assert kept is not None
    backend = LocalBackend(state, environ)
    try:
        assert backend.home.root.is_dir()  # what a fallback run does first
        backend._start(4)
        assert not linger.alive(kept.pid) and not kept.home.exists()
    finally:
        backend.close()
    assert processes_using(state) == []
