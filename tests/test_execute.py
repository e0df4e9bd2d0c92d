"""Real runs: prompt flow's executor in a child process, LLM nodes over HTTP to a server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import RUN_PROJECT, CliResult, Project, interrupt, processes_using, running, snapshot

pytestmark = pytest.mark.executor

Cli = Callable[..., CliResult]
KEY = "sk-test-" + "k" * 24  # tests/conftest.py's run_env



@pytest.fixture
def run_project(project: Callable[..., Project]) -> Callable[..., Project]:
    def make(extra: dict[str, str] | None = None) -> Project:
        return project({**RUN_PROJECT, **(extra or {})}, base=False)
    return make


def summary(proj: Project) -> dict:
    return json.loads(proj.read(".llmops/summary.json"))


def test_python_flow_then_evaluation(cli: Cli, run_project: Callable[..., Project], run_env: FakeOpenAI) -> None:
    proj = run_project()
    before = snapshot(proj.path("flows"))
    result = cli("batch-run", "--flow", "echo", "--workers", "2")
    assert result.code == 0, result.err
    run = summary(proj)["flows"]["echo"]["run"]
    assert (run["status"], run["lines_total"], run["lines_failed"], run["errors"]) == ("completed", 4, 0, [])
    assert run["latency_p50"] is not None and run["latency_p95"] >= run["latency_p50"]
    lines = [json.loads(x) for x in proj.read(".llmops/runs/echo/lines.jsonl").splitlines()]
    assert [(x["line"], x["outputs"]) for x in lines] == [(0, {"loud": "A"}), (1, {"loud": "B"}),
                                                         (2, {"loud": "C"}), (3, {"loud": "D"})]

    result = cli("eval-run", "--flow", "echo")
    assert result.code == 0, result.err
    evaluation = summary(proj)["flows"]["echo"]["evaluations"]["match"]
    assert evaluation["metrics"] == {"match_rate": 0.75}
    assert evaluation["status"] == "completed" and evaluation["lines_total"] == 4
    scores = [json.loads(x) for x in proj.read(".llmops/runs/echo/evals/match/lines.jsonl").splitlines()]
    assert [x["outputs"]["score"] for x in scores] == [1.0, 1.0, 0.0, 1.0]
    assert "match_rate = 0.75" in result.err
    assert snapshot(proj.path("flows")) == before
    assert run_env.requests == []


def test_failed_line_is_reported_and_fails_the_run(cli: Cli, run_project: Callable[..., Project],
                                                  run_env: FakeOpenAI) -> None:
    proj = run_project({"data/echo.jsonl": '{"text": "a", "expected": "A"}\n{"text": "boom", "expected": "B"}\n'
                                           '{"text": "c", "expected": "C"}\n'})
    result = cli("batch-run", "--flow", "echo")
    assert result.code == 1
    run = summary(proj)["flows"]["echo"]["run"]
    assert (run["status"], run["lines_total"], run["lines_failed"]) == ("failed", 3, 1)
    (error,) = run["errors"]
    assert (error["line"], error["node"]) == (2, "shout")  # 1-based: the data's second line
    assert "cannot shout boom" in error["message"]
    assert "line 2 (node shout): " in result.err and "cannot shout boom" in result.err
    assert "1 line failed (allowed 0)" in result.err


def test_failed_lines_within_the_allowance_pass(cli: Cli, run_project: Callable[..., Project],
                                               run_env: FakeOpenAI) -> None:
    proj = run_project({"data/echo.jsonl": '{"text": "a", "expected": "A"}\n{"text": "boom", "expected": "B"}\n'})
    proj.replace("llmops.yaml", "    path: flows/echo\n", "    path: flows/echo\n    max_failed_lines: 1\n")
    result = cli("batch-run", "--flow", "echo")
    assert result.code == 0, result.err
    assert summary(proj)["flows"]["echo"]["run"]["status"] == "completed"


def test_a_run_whose_every_line_failed_fails_whatever_the_allowance(cli: Cli, run_project: Callable[..., Project],
                                                                    run_env: FakeOpenAI) -> None:
    proj = run_project({"data/echo.jsonl": '{"text": "boom", "expected": "A"}\n{"text": "boom", "expected": "B"}\n'})
    proj.replace("llmops.yaml", "    path: flows/echo\n", "    path: flows/echo\n    max_failed_lines: 5\n")
    result = cli("batch-run", "--flow", "echo")
    assert result.code == 1
    assert summary(proj)["flows"]["echo"]["run"]["status"] == "failed"
    assert "2 lines failed (allowed 5)" in result.err
    assert "every line of echo failed (see the errors above): a run with no line done never passes" in result.err
    assert "more failed lines than max_failed_lines allows" not in result.err


def test_line_timeout(cli: Cli, run_project: Callable[..., Project], run_env: FakeOpenAI) -> None:
    proj = run_project({"data/echo.jsonl": '{"text": "a", "expected": "A"}\n{"text": "sleep", "expected": "B"}\n'})
    result = cli("batch-run", "--flow", "echo", "--line-timeout", "1")
    assert result.code == 1
    (error,) = summary(proj)["flows"]["echo"]["run"]["errors"]
    assert error["line"] == 2 and "timeout" in error["message"].lower()


def test_llm_flow_counts_tokens_over_real_http(cli: Cli, run_project: Callable[..., Project],
                                              run_env: FakeOpenAI) -> None:
    proj = run_project()
    result = cli("batch-run", "--flow", "chat")
    assert result.code == 0, result.err
    run = summary(proj)["flows"]["chat"]["run"]
    assert run["lines_failed"] == 0 and run["lines_total"] == 3
    assert run["tokens"]["total"] == run["tokens"]["prompt"] + run["tokens"]["completion"] > 0
    assert len(run_env.requests) == 3
    assert {r["body"]["model"] for r in run_env.requests} == {"gpt-test"}  # the config's override
    assert all(r["authorization"] for r in run_env.requests)
    outputs = [json.loads(x)["outputs"]["answer"] for x in proj.read(".llmops/runs/chat/lines.jsonl").splitlines()]
    assert outputs == ["ECHO: What is 1+1?", "ECHO: Name a colour", "ECHO: Say hi"]
    key = "sk-test-" + "k" * 24
    assert key not in result.err + result.out
    assert not any(key.encode() in p.read_bytes() for p in proj.path(".llmops").rglob("*") if p.is_file())


def test_run_yml_defined_run(cli: Cli, run_project: Callable[..., Project], run_env: FakeOpenAI) -> None:
    proj = run_project()
    result = cli("batch-run", "--flow", "chat-run-file")
    assert result.code == 0, result.err
    assert summary(proj)["flows"]["chat-run-file"]["run"]["lines_total"] == 3
    assert {r["body"]["model"] for r in run_env.requests} == {"gpt-from-run-yml"}


def test_llm_errors_fail_their_lines(cli: Cli, run_project: Callable[..., Project], run_env: FakeOpenAI) -> None:
    proj = run_project({"data/chat.jsonl": '{"question": "fine"}\n{"question": "please FAIL"}\n'})
    result = cli("batch-run", "--flow", "chat")
    assert result.code == 1
    (error,) = summary(proj)["flows"]["chat"]["run"]["errors"]
    assert (error["line"], error["node"]) == (2, "answer")
    assert "400" in error["message"]


def test_single_line_test_step(cli: Cli, run_project: Callable[..., Project], run_env: FakeOpenAI) -> None:
    proj = run_project()
    before = snapshot(proj.path("flows"))
    result = cli("test", "--flow", "chat", "--input", "question=How are you?")
    assert result.code == 0, result.err
    out = result.out.splitlines()
    assert out[0] == "{" and '"answer": "ECHO: How are you?"' in result.out
    assert any(line.split()[:2] == ["answer", "Completed"] for line in out)
    assert run_env.requests[0]["body"]["model"] == "gpt-test"
    assert snapshot(proj.path("flows")) == before
    failed = cli("test", "--flow", "echo", "--input", "text=boom")
    assert failed.code == 1 and "cannot shout boom" in failed.err


@pytest.mark.parametrize(("edit", "argv", "message"), [
    (("llmops.yaml", "text: ${data.text}", "text: ${data.txt}"), ("batch-run", "--flow", "echo"),
     "llmops.yaml:12:13: '${data.txt}': the data data/echo.jsonl has no column 'txt'; did you mean 'text'?"),
    (None, ("eval-run", "--flow", "echo"), "flow 'echo' has no batch run in .llmops; run 'llmops-ci batch-run"),
    (None, ("batch-run", "--flow", "chat", "--backend", "azureml"), "--backend azureml needs an 'azureml:' block"),
    (None, ("test",), "test needs exactly one --flow NAME; flows: echo, chat, chat-run-file"),
    (None, ("test", "--flow", "chat", "--input", "question"), "--input question: write --input NAME=VALUE"),
    (("llmops.yaml", "version: 1", "version: 2"), ("batch-run",), "llmops.yaml:1:10: 'version' is '2'"),
])
def test_bad_input_stops_before_anything_runs(edit: tuple[str, str, str] | None, argv: tuple[str, ...], message: str,
                                              cli: Cli, run_project: Callable[..., Project],
                                              run_env: FakeOpenAI) -> None:
    proj = run_project()
    if edit:
        proj.replace(*edit)
    result = cli(*argv)
    assert result.code == 2, result
    assert message in result.err
    assert "Traceback" not in result.err
    assert not proj.path(".llmops/pf-home").exists()
    assert run_env.requests == []


def test_unset_env_names_the_variable(cli: Cli, run_project: Callable[..., Project], run_env: FakeOpenAI,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    proj = run_project()
    monkeypatch.delenv("OPENAI_API_KEY")
    result = cli("batch-run", "--flow", "chat")
    assert result.code == 2
    assert "llmops.yaml:6:14: environment variable OPENAI_API_KEY is not set" in result.err
    assert not proj.path(".llmops/pf-home").exists()
    # a flow that needs no connection does not need the variable
    assert cli("batch-run", "--flow", "echo").code == 0


def test_unreachable_endpoint_is_exit_3(cli: Cli, run_project: Callable[..., Project], run_env: FakeOpenAI,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    proj = run_project()
    result = cli("batch-run", "--flow", "chat")
    assert result.code == 3, result.err
    assert "every line failed reaching an outside service (chat: connection refused" in result.err
    run = summary(proj)["flows"]["chat"]["run"]
    assert run["lines_failed"] == 3 and "APIConnectionError" in run["errors"][0]["message"]


def outputs(proj: Project, flow: str) -> list:
    return [json.loads(x)["outputs"] for x in proj.read(f".llmops/runs/{flow}/lines.jsonl").splitlines()]


def test_record_then_replay_offline(cli: Cli, run_project: Callable[..., Project], run_env: FakeOpenAI,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    proj = run_project()
    assert cli("batch-run", "--flow", "chat", "--llm-cache", "record").code == 0
    recorded = outputs(proj, "chat")
    assert len(run_env.requests) == 3
    assert summary(proj)["flows"]["chat"]["run"]["llm_cache"] == {
        "mode": "record", "hits": 0, "misses": 3, "recorded": 3, "tokens_saved": 0}
    cassette = proj.read("cassettes/chat.json")
    assert "sk-test-" not in cassette
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.delenv("OPENAI_API_KEY")  # offline, no key
    result = cli("batch-run", "--flow", "chat", "--llm-cache", "replay")
    assert result.code == 0, result.err
    assert outputs(proj, "chat") == recorded
    assert len(run_env.requests) == 3
    cache = summary(proj)["flows"]["chat"]["run"]["llm_cache"]
    assert (cache["hits"], cache["misses"]) == (3, 0) and cache["tokens_saved"] > 0


def test_a_changed_line_misses_exactly_its_line(cli: Cli, run_project: Callable[..., Project],
                                               run_env: FakeOpenAI) -> None:
    proj = run_project()
    assert cli("batch-run", "--flow", "chat", "--llm-cache", "record").code == 0
    proj.replace("data/chat.jsonl", "Name a colour", "Name a flower")
    replay = cli("batch-run", "--flow", "chat", "--llm-cache", "replay")
    assert replay.code == 1
    (error,) = summary(proj)["flows"]["chat"]["run"]["errors"]
    assert (error["line"], error["node"]) == (2, "answer")
    assert "no recording of this call" in error["message"] and "--llm-cache record" in error["message"]
    assert len(run_env.requests) == 3
    auto = cli("batch-run", "--flow", "chat", "--llm-cache", "auto")
    assert auto.code == 0, auto.err
    cache = summary(proj)["flows"]["chat"]["run"]["llm_cache"]
    assert (cache["hits"], cache["misses"], cache["recorded"]) == (2, 1, 1)
    assert len(run_env.requests) == 4 and outputs(proj, "chat")[1] == {"answer": "ECHO: Name a flower"}


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)


def test_changed_since_runs_only_touched_flows_and_carries_the_rest(cli: Cli, run_project: Callable[..., Project],
                                                                    run_env: FakeOpenAI, tmp_path: Path) -> None:
    proj = run_project()
    baseline = tmp_path / "baseline"
    assert cli("batch-run", "--flow", "chat", "--state-dir", str(baseline)).code == 0
    git(proj.root, "init", "-q", "-b", "main")
    git(proj.root, "add", "llmops.yaml", "flows", "data", "runs")
    git(proj.root, "commit", "-q", "-m", "base")
    git(proj.root, "checkout", "-q", "-b", "change")
    proj.replace("data/echo.jsonl", '"text": "d"', '"text": "e"')
    calls = len(run_env.requests)
    result = cli("batch-run", "--changed-since", "main", "--baseline", str(baseline))
    assert result.code == 0, result.err
    assert "echo: changed (data/echo.jsonl changed (data))" in result.err
    assert "chat: unchanged since main, not run; baseline results carried over" in result.err
    flows = summary(proj)["flows"]
    assert flows["echo"]["run"]["lines_total"] == 4
    assert flows["chat"]["unchanged"] == {"since": "main", "carried_over": True, "baseline": str(baseline)}
    assert flows["chat"]["run"] == json.loads((baseline / "summary.json").read_text())["flows"]["chat"]["run"]
    assert flows["chat-run-file"]["unchanged"]["carried_over"] is False
    assert len(run_env.requests) == calls  # the LLM flows did not run
    comment = cli("comment")
    assert "Not run: unchanged since main" in comment.out  # plain text on a terminal
    assert "chat-run-file (no baseline results: not gated)" in comment.out
    assert "### Not run: unchanged since `main`" in proj.read(".llmops/comment.md")
    assert "all checks passed" in comment.out  # echo ran, chat's results were carried over: both gated
    # nothing changed and no baseline: green, but it says that nothing was run or gated
    git(proj.root, "commit", "-q", "-am", "change")
    nothing = cli("batch-run", "--changed-since", "HEAD", "--state-dir", str(tmp_path / "nothing"))
    assert nothing.code == 0, nothing.err
    said = cli("comment", "--state-dir", str(tmp_path / "nothing")).out
    assert "no flow changed since HEAD, so none was run or gated" in said and "all checks passed" not in said
    assert "the results shown for them are the baseline's" not in said


def lines_of(proj: Project, flow: str) -> list[dict]:
    return [json.loads(x) for x in proj.read(f".llmops/runs/{flow}/lines.jsonl").splitlines()]


def test_flows_side_by_side_keep_their_own_results(cli: Cli, run_project: Callable[..., Project],
                                                   run_env: FakeOpenAI) -> None:
    """All flows of a step share one executor process and --workers; a failing flow touches nobody else."""
    proj = run_project({"data/echo.jsonl": '{"text": "a", "expected": "A"}\n{"text": "boom", "expected": "B"}\n'
                                           '{"text": "c", "expected": "C"}\n'})
    result = cli("batch-run", "--workers", "3")
    assert result.code == 1
    flows = summary(proj)["flows"]
    assert (flows["echo"]["run"]["lines_failed"], flows["echo"]["run"]["errors"][0]["line"]) == (1, 2)  # 1-based
    for flow in ("chat", "chat-run-file"):
        assert (flows[flow]["run"]["status"], flows[flow]["run"]["lines_failed"]) == ("completed", 0)
        assert flows[flow]["run"]["tokens"]["total"] > 0
    assert [x["outputs"]["answer"] for x in lines_of(proj, "chat")] == [
        "ECHO: What is 1+1?", "ECHO: Name a colour", "ECHO: Say hi"]
    assert [(x["line"], x["status"]) for x in lines_of(proj, "echo")] == [
        (0, "Completed"), (1, "Failed"), (2, "Completed")]
    assert {r["body"]["model"] for r in run_env.requests} == {"gpt-test", "gpt-from-run-yml"}
    # each flow's report comes in the config's order, whichever finished first
    reports = [line.split(":")[0] for line in result.err.splitlines() if " lines ok in " in line]
    assert reports == ["echo", "chat", "chat-run-file"]
    assert proj.read(".llmops/logs/executor.log").count("Executing node answer") == 6  # one process ran them all


def test_tokens_are_counted_per_line(cli: Cli, run_project: Callable[..., Project], run_env: FakeOpenAI) -> None:
    proj = run_project()
    assert cli("batch-run", "--flow", "chat").code == 0
    tokens = [x["tokens"] for x in lines_of(proj, "chat")]
    # the fake counts whitespace-separated words: the prompt "Be brief.\nWhat is 1+1?" is 5, "ECHO: What is 1+1?" 4
    assert tokens[0] == {"prompt": 5, "completion": 4, "total": 9}
    assert all(t["total"] == t["prompt"] + t["completion"] > 0 for t in tokens)


def test_a_flow_that_opts_out_runs_in_pf_run_with_the_same_results(cli: Cli, run_project: Callable[..., Project],
                                                                   run_env: FakeOpenAI) -> None:
    proj = run_project()
    assert cli("batch-run", "--flow", "echo").code == 0
    warm = [(x["line"], x["outputs"]) for x in lines_of(proj, "echo")]
    proj.replace("llmops.yaml", "      match:\n        path: flows/match\n",
                 "      match:\n        path: flows/match\n"
                 "        environment_variables: {LLMOPS_CI_EXECUTOR: process}\n")
    result = cli("eval-run", "--flow", "echo")  # pf.run over a base run the warm executor made
    assert result.code == 0, result.err
    assert ("echo/match: runs in its own prompt flow process (pf.run) because LLMOPS_CI_EXECUTOR=process is set"
            in result.err)
    assert summary(proj)["flows"]["echo"]["evaluations"]["match"]["metrics"] == {"match_rate": 0.75}
    scores = [(x["line"], x["outputs"]["score"]) for x in lines_of(proj, "echo/evals/match")]
    assert scores == [(0, 1.0), (1, 1.0), (2, 0.0), (3, 1.0)]
    proj.replace("llmops.yaml", "    path: flows/echo\n",
                 "    path: flows/echo\n    environment_variables: {LLMOPS_CI_EXECUTOR: process}\n")
    result = cli("batch-run", "--flow", "echo")
    assert result.code == 0, result.err
    assert "echo: runs in its own prompt flow process (pf.run)" in result.err
    assert [(x["line"], x["outputs"]) for x in lines_of(proj, "echo")] == warm


@pytest.mark.parametrize(("sig", "code", "executor"), [
    (signal.SIGTERM, 143, "warm"), (signal.SIGINT, 130, "warm"), (signal.SIGTERM, 143, "process")])
def test_a_signal_stops_every_process_keeps_the_recordings_and_leaves_no_secret(
        sig: int, code: int, executor: str, run_project: Callable[..., Project], run_env: FakeOpenAI,
        tmp_path: Path, clean_env: dict[str, str]) -> None:
    fast = ["What is 1+1?", "Name a colour", "Say hi"]
    proj = run_project({"data/chat.jsonl": "".join(json.dumps({"question": q}) + "\n"
                                                   for q in [*fast, "be SLOW 1", "be SLOW 2", "be SLOW 3"])})
    if executor == "process":
        proj.replace("llmops.yaml", "    path: flows/chat\n",
                     "    path: flows/chat\n    environment_variables: {LLMOPS_CI_EXECUTOR: process}\n")
    run_env.slow_seconds = 60
    private_tmp = Path(tempfile.mkdtemp(prefix="sig-"))  # short: pf.run's Unix sockets go below it
    env = {**clean_env, "OPENAI_BASE_URL": os.environ["OPENAI_BASE_URL"], "OPENAI_API_KEY": KEY,
           "TMPDIR": str(private_tmp)}
    with running([sys.executable, "-m", "llmops_ci", "batch-run", "--flow", "chat", "--workers", "6",
                  "--llm-cache", "record"], cwd=proj.root, env=env) as proc:
        deadline = time.monotonic() + 120
        while len(run_env.requests) < 6 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert len(run_env.requests) == 6, proc.communicate(timeout=30)[0] if proc.poll() is not None else ""
        time.sleep(1)  # the three fast lines are answered and recorded
        started = time.monotonic()
        out = interrupt(proc, sig)
    assert proc.returncode == code, out
    assert time.monotonic() - started < 30, "stopping took as long as the slow calls"
    assert "Traceback" not in out
    assert processes_using(tmp_path) == processes_using(private_tmp) == []  # the executor, pf's workers: gone
    entries = json.loads(proj.read("cassettes/chat.json"))["entries"]
    assert sorted(e["request"]["messages"][-1]["content"] for e in entries) == sorted(fast)
    assert json.loads(proj.read(".llmops/summary.json"))["interrupted"] == {
        "step": "batch-run", "signal": signal.Signals(sig).name}
    # the private prompt flow home (store and keyring) went with the run, and no file we wrote holds the key
    assert list(private_tmp.iterdir()) == [] and not proj.path(".llmops/pf-home").exists()
    private_tmp.rmdir()
    assert not any(KEY.encode() in p.read_bytes() for p in proj.root.rglob("*") if p.is_file())


@pytest.mark.parametrize("fault", ["500", "429", "truncate", "slow"])
@pytest.mark.parametrize("cache", ["record", "off"])
def test_a_dying_endpoint_fails_fast_with_exit_3(fault: str, cache: str, cli: Cli,
                                                 run_project: Callable[..., Project], run_env: FakeOpenAI) -> None:
    six = "".join(json.dumps({"question": f"question {i}"}) + "\n" for i in range(6))
    proj = run_project({"data/chat.jsonl": six})
    proj.replace("llmops.yaml", "    path: flows/chat\n", "    path: flows/chat\n    max_failed_lines: 6\n")
    run_env.fault, run_env.slow_seconds = fault, 30
    started = time.monotonic()
    result = cli("batch-run", "--flow", "chat", "--workers", "6", "--line-timeout", "3", "--llm-cache", cache)
    assert time.monotonic() - started < 60, "prompt flow kept retrying a dead endpoint"
    assert result.code == 3, result.err
    assert "every line failed reaching an outside service (chat: " in result.err
    assert "LLM endpoint of 'openai' is down" in result.err
    run = summary(proj)["flows"]["chat"]["run"]
    assert (run["status"], run["lines_failed"]) == ("failed", 6)  # the allowance is not for a dead endpoint
    assert not proj.path("cassettes/chat.json").exists()  # a failure is never recorded
