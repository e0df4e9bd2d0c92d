"""Flow ``repeats: k`` (issue #25): each line runs k times above every engine, replays repeat by repeat, and the
gate scores a line by the mean of its repeats and reports the spread within lines."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmops_ci.gate.repeats import fold, mean_by_line
from llmops_ci.results.records import LineResult, RunRecord
from tests.gate.conftest import run_name
from tests.helpers.config import Config, Flow, Rule, judged
from tests.helpers.projects import RUN_CONFIG, RUN_PROJECT, CliResult, Project

Cli = Callable[..., CliResult]


def line(n: int, status: str = "Completed") -> LineResult:
    return LineResult(n, status, {"q": n // 3}, {"a": n}, 0.1, {})


def test_fold_counts_data_lines_once() -> None:
    # 2 data lines x 3 repeats; repeat 1 of data line 1 (record 4) failed
    record = RunRecord("f", "r", "Completed", [line(i, "Failed" if i == 4 else "Completed") for i in range(6)], 1.0)
    fold(record, 3, 2)
    assert [(x.line, x.repeat) for x in record.lines] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    summary = record.summary(0)
    assert (summary["lines_total"], summary["lines_failed"], summary["repeats"]) == (2, 1, 3)
    assert summary["errors"][0]["line"] == 2 and summary["errors"][0]["repeat"] == 2  # 1-based, as shown
    assert record.lines[4].to_json()["repeat"] == 1


def test_mean_and_spread_by_hand() -> None:
    # line 0: 1, 0, 1 -> mean 2/3, sd sqrt(((1/3)² * 2 + (2/3)²) / 2) = sqrt(1/3) = 0.57735; line 1: 1, 1, 1 -> sd 0
    means, spread, most = mean_by_line([(0, 1.0), (0, 0.0), (0, 1.0), (1, 1.0), (1, 1.0), (1, 1.0)])
    assert means == pytest.approx({0: 2 / 3, 1: 1.0}) and most == 3
    assert spread == pytest.approx((3 ** -0.5 + 0.0) / 2)


def write_state(root: Path, per_line: dict[int, list[float]]) -> None:
    records = [(n, r, s) for n, scores in per_line.items() for r, s in enumerate(scores)]
    mean = sum(s for _, _, s in records) / len(records)
    flow = {"run": {"name": run_name(root), "status": "completed", "lines_total": len(per_line), "lines_failed": 0,
                    "repeats": 3},
            "evaluations": {"judge": {"run": "e", "status": "completed", "metrics": {"accuracy": mean}}}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.json").write_text(json.dumps({"schema": "llmops-ci/summary@1", "flows": {"qa": flow}}))
    evals = root / "runs" / "qa" / "evals" / "judge"
    evals.mkdir(parents=True, exist_ok=True)
    (root / "runs" / "qa" / "lines.jsonl").write_text("".join(json.dumps(
        {"line": n, "repeat": r, "status": "Completed", "inputs": {"q": n}, "outputs": {}}) + "\n"
        for n, r, _ in records))
    (evals / "lines.jsonl").write_text("".join(json.dumps(
        {"line": n, "repeat": r, "status": "Completed", "outputs": {"correct": s}}) + "\n" for n, r, s in records))


def test_gate_scores_a_line_by_the_mean_of_its_repeats(cli: Cli, project: Callable[..., Project],
                                                       tmp_path: Path) -> None:
    proj = project(config=judged({"judge.accuracy": Rule(max_drop=0.5)}, repeats=3), base=False)
    # 12 lines; in this run every line is right 2 times of 3 (mean 2/3), in the baseline always (mean 1)
    write_state(proj.path(".llmops"), {n: [1.0, 0.0, 1.0] for n in range(12)})
    write_state(tmp_path / "main", {n: [1.0, 1.0, 1.0] for n in range(12)})
    result = cli("gate", "--baseline", str(tmp_path / "main"))
    assert result.code == 0, result.err
    (row,) = json.loads(proj.read(".llmops/summary.json"))["flows"]["qa"]["gate"]["checks"]
    # 12 paired lines (not 36), each a mean: differences all -1/3, so the interval is a point
    assert row["lines"] == 12 and row["line_delta"] == pytest.approx(-1 / 3, abs=1e-6)
    assert row["method"] == "paired-bootstrap" and row["interval"] == pytest.approx([-1 / 3, -1 / 3], abs=1e-6)
    assert row["repeats"] == 3 and row["spread"] == pytest.approx(3 ** -0.5, abs=1e-6)
    assert "3 repeats (within-line sd 0.577" in result.err
    assert "3 repeats" in cli("comment").out


def test_repeats_out_of_range_is_exit_2(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project(config=Config(flows={"qa": Flow("flows/qa", data="d.jsonl", repeats=0)}), base=False)
    result = cli("gate")
    assert result.code == 2 and "repeats must be 1 to 100" in result.err and proj


@pytest.mark.executor
def test_repeats_record_and_replay_each_repeat_its_own_answer(cli: Cli, project: Callable[..., Project],
                                                              run_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = itertools.count()
    lock = threading.Lock()

    def answer(prompt: str) -> str:  # a model that never answers the same twice
        with lock:
            return f"{prompt} #{next(counter)}"

    run_env.answer = answer
    proj = project(RUN_PROJECT, base=False, config=RUN_CONFIG.with_flow("chat", repeats=3))
    result = cli("batch-run", "--flow", "chat", "--llm-cache", "record")
    assert result.code == 0, result.err
    run = json.loads(proj.read(".llmops/summary.json"))["flows"]["chat"]["run"]
    assert (run["lines_total"], run["lines_failed"], run["repeats"]) == (3, 0, 3)
    assert run["llm_cache"]["recorded"] == 9 and len(run_env.requests) == 9
    recorded = [json.loads(x) for x in proj.read(".llmops/runs/chat/lines.jsonl").splitlines()]
    assert [(x["line"], x["repeat"]) for x in recorded] == [(n, r) for n in range(3) for r in range(3)]
    assert len({json.dumps(x["outputs"]) for x in recorded}) == 9  # every repeat its own answer

    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.delenv("OPENAI_API_KEY")  # offline, no key
    result = cli("batch-run", "--flow", "chat", "--llm-cache", "replay")
    assert result.code == 0, result.err
    replayed = [json.loads(x) for x in proj.read(".llmops/runs/chat/lines.jsonl").splitlines()]
    assert [(x["line"], x["repeat"], x["outputs"]) for x in replayed] == [
        (x["line"], x["repeat"], x["outputs"]) for x in recorded]
    cache = json.loads(proj.read(".llmops/summary.json"))["flows"]["chat"]["run"]["llm_cache"]
    assert (cache["hits"], cache["misses"]) == (9, 0) and len(run_env.requests) == 9


@pytest.mark.executor
def test_evaluations_score_every_repeat(cli: Cli, project: Callable[..., Project], run_env: Any) -> None:
    config = RUN_CONFIG.with_flow("echo", repeats=2, gate={"match.match_rate": Rule(min=0.5)}).with_evaluation(
        "echo", "match", scores={"match_rate": "score"})
    proj = project(RUN_PROJECT, base=False, config=config)
    for step in ("batch-run", "eval-run", "gate"):
        assert (result := cli(step, "--flow", "echo")).code == 0, result.err
    flow = json.loads(proj.read(".llmops/summary.json"))["flows"]["echo"]
    assert (flow["run"]["lines_total"], flow["run"]["repeats"]) == (4, 2)
    evaluation = flow["evaluations"]["match"]
    assert evaluation["lines_total"] == 4 and evaluation["metrics"] == {"match_rate": 0.75}  # 6 of 8 scores
    scores = [json.loads(x) for x in proj.read(".llmops/runs/echo/evals/match/lines.jsonl").splitlines()]
    assert [(x["line"], x["repeat"], x["outputs"]["score"]) for x in scores] == [
        (0, 0, 1.0), (0, 1, 1.0), (1, 0, 1.0), (1, 1, 1.0), (2, 0, 0.0), (2, 1, 0.0), (3, 0, 1.0), (3, 1, 1.0)]


def test_untagged_repeats_replay_their_own_answers(tmp_path: Path) -> None:
    """An engine that does not tag its lines (no X-Llmops-Line): the n-th identical call is repeat n mod k, so a
    replay gives back the k recorded answers, not k copies of one."""
    import requests

    from llmops_ci.llm.cache import LlmProxy
    from llmops_ci.llm.cassette import CacheSettings
    from tests.fakes.openai import FakeOpenAI

    counter = itertools.count()
    server = FakeOpenAI(answer=lambda prompt: f"{prompt} #{next(counter)}").start()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    settings = CacheSettings("record", tmp_path / "c.json", repeats=3)

    def answers(proxy: LlmProxy) -> list[str]:
        return [requests.post(f"{proxy.url_for('openai')}/chat/completions", json=body, timeout=10).json()[
            "choices"][0]["message"]["content"] for _ in range(3)]

    try:
        with LlmProxy(settings, {"openai": server.url + "/v1"}) as p:
            recorded = answers(p)
        assert recorded == ["hi #0", "hi #1", "hi #2"] and p.stats.recorded == 3
        with LlmProxy(CacheSettings("replay", tmp_path / "c.json", repeats=3), {"openai": None}) as p:
            assert answers(p) == recorded and (p.stats.hits, p.stats.misses) == (3, 0)
    finally:
        server.stop()
