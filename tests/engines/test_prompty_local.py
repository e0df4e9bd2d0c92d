"""Prompty 2.x files as flows and as judges through the local backend, over real HTTP to the fake OpenAI server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.core.errors import UsageError
from llmops_ci.engines.mapping import mapped_inputs, mean_scores, read_rows
from llmops_ci.kinds import inspect
from llmops_ci.results.records import LineResult
from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import CliResult, Project

CONFIG = """\
    version: 1
    connections:
      openai:
        type: open_ai
        base_url: ${env:OPENAI_BASE_URL}
        api_key: ${env:OPENAI_API_KEY}
    flows:
      summarize:
        path: flows/summarize.prompty
        data: data/pages.jsonl
        column_mapping:
          text: ${data.text}
        max_failed_lines: 1
        evaluations:
          judge:
            path: flows/judge.prompty
            column_mapping:
              answer: ${run.outputs.output}
              label: ${data.label}
          exact:
            path: flows/exact
            column_mapping:
              groundtruth: ${data.label}
              prediction: ${run.outputs.output}
      pick:
        path: flows/pick
        data: data/pages.jsonl
        column_mapping:
          text: ${data.text}
        evaluations:
          judge:
            path: flows/judge.prompty
            column_mapping:
              answer: ${run.outputs.category}
              label: ${data.label}
              text: ${run.inputs.text}
    """

FILES = {
    "llmops.yaml": CONFIG,
    "flows/summarize.prompty": """\
        ---
        name: summarize
        model:
          id: gpt-4o-mini
          provider: openai
          connection:
            kind: reference
            name: openai
          options:
            temperature: 0
        inputs:
          - name: text
            kind: string
          - name: style
            kind: string
            default: one word
        ---
        system:
        Answer in {{style}}.

        user:
        {{text}}
        """,
    "flows/judge.prompty": """\
        ---
        name: judge
        model:
          id: gpt-4o-mini
          provider: openai
          connection:
            kind: key
            endpoint: ${env:OPENAI_BASE_URL}
            apiKey: ${env:OPENAI_API_KEY}
        inputs:
          - name: answer
            kind: string
          - name: label
            kind: string
          - name: text
            kind: string
            default: ""
        outputs:
          - name: score
            kind: integer
          - name: reason
            kind: string
        ---
        system:
        GRADE the answer against the label. Reply with JSON: {"score": 0 or 1, "reason": "..."}.

        user:
        answer={{answer}} label={{label}}
        """,
    "flows/exact/flow.flex.yaml": "entry: exact:Exact\n",
    "flows/exact/exact.py": """\
        from typing import TypedDict


        class Grade(TypedDict):
            correct: float


        class Exact:
            def __init__(self) -> None:
                pass

            def __call__(self, groundtruth: str, prediction: str) -> Grade:
                return {"correct": 1.0 if groundtruth in prediction else 0.0}

            def __aggregate__(self, line_results: list) -> dict:
                return {"exact": sum(r["correct"] for r in line_results) / len(line_results)}
        """,
    "flows/pick/flow.flex.yaml": "entry: pick:pick\n",
    "flows/pick/pick.py": """\
        from typing import TypedDict


        class Picked(TypedDict):
            category: str


        def pick(text: str) -> Picked:
            return {"category": "App" if "app" in text.lower() else "Movie"}
        """,
    "data/pages.jsonl": """\
        {"text": "Download our app", "label": "App"}
        {"text": "Watch the trailer", "label": "Movie"}
        {"text": "FAIL this one", "label": "None"}
        """,
}


def model(prompt: str) -> str:
    """Summaries name the label word they see; the judge gives 1 when the answer holds the label."""
    if "GRADE" in prompt:
        line = prompt.strip().splitlines()[-1]
        answer, _, label = line.partition(" label=")
        return json.dumps({"score": int(label.strip() in answer), "reason": "compared"})
    text = prompt.strip().splitlines()[-1]
    return "App" if "app" in text else "Movie"


def summary(root: Path) -> dict:
    return json.loads((root / "state" / "summary.json").read_text())


@pytest.mark.executor
def test_prompty_flow_judge_and_replay(project: Callable[..., Project], cli: Callable[..., CliResult],
                                       run_env: FakeOpenAI) -> None:
    """A prompty 2.x flow runs its lines, a flex evaluation scores it and a prompty judge scores it and a flex
    run; recorded once, the same steps replay with no call upstream."""
    run_env.answer = model
    proj = project(FILES, base=False)
    state = str(proj.root / "state")
    for step in ("batch-run", "eval-run"):
        result = cli(step, "--state-dir", state, "--llm-cache", "record", "--workers", "2")
        assert result.code == 0, (step, result.err)
    flows = summary(proj.root)["flows"]
    run = flows["summarize"]["run"]
    assert (run["lines_total"], run["lines_failed"], run["status"]) == (3, 1, "completed")
    assert run["errors"][0]["line"] == 3 and "fake failure" in run["errors"][0]["message"]
    assert run["tokens"]["total"] > 0 and run["latency_p95"] is not None
    lines = [json.loads(x) for x in (proj.root / "state/runs/summarize/lines.jsonl").read_text().splitlines()]
    assert [line["outputs"] for line in lines[:2]] == [{"output": "App"}, {"output": "Movie"}]
    tokens = lines[0]["tokens"]
    assert set(tokens) == {"prompt", "completion", "total"}
    assert tokens["total"] == tokens["prompt"] + tokens["completion"] > 0
    # the judge scores the two lines that completed (the failed one has no output to score)
    judge = flows["summarize"]["evaluations"]["judge"]
    assert (judge["lines_failed"], judge["metrics"]) == (0, {"score": 1.0})
    assert flows["summarize"]["evaluations"]["exact"]["metrics"] == {"exact": 1.0}
    # the judge over a flex run, reading the base run's inputs
    pick = flows["pick"]["evaluations"]["judge"]
    assert (pick["lines_total"], pick["metrics"]) == (3, {"score": round(2 / 3, 4)})
    calls = len(run_env.requests)
    assert calls == 3 + 2 + 3
    cassettes = sorted(p.name for p in (proj.root / "cassettes").iterdir())
    assert cassettes == ["pick.judge.json", "summarize.json", "summarize.judge.json"]  # no call, no cassette

    replay = str(proj.root / "replay")
    for step in ("batch-run", "eval-run"):
        result = cli(step, "--state-dir", replay, "--llm-cache", "replay", "--flow", "summarize")
        assert result.code == 0, (step, result.err)
    again = json.loads((proj.root / "replay" / "summary.json").read_text())["flows"]["summarize"]
    assert len(run_env.requests) == calls
    assert again["run"]["llm_cache"]["hits"] == 2 and again["run"]["llm_cache"]["misses"] == 1
    assert again["evaluations"]["judge"]["metrics"] == {"score": 1.0}


@pytest.mark.executor
def test_prompty_test_step_and_offline_replay_needs_no_key(project: Callable[..., Project],
                                                           cli: Callable[..., CliResult], run_env: FakeOpenAI,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    run_env.answer = model
    proj = project(FILES, base=False)
    result = cli("test", "--flow", "summarize", "--input", "text=an app store page")
    assert result.code == 0, result.err
    assert "App" in result.out
    state = str(proj.root / "state")
    for step in ("batch-run", "eval-run"):
        assert cli(step, "--flow", "summarize", "--state-dir", state, "--llm-cache", "record").code == 0
    calls = len(run_env.requests)
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_BASE_URL")  # the judge's kind: key connection reads both
    for step in ("batch-run", "eval-run"):
        result = cli(step, "--flow", "summarize", "--state-dir", str(proj.root / "s2"), "--llm-cache", "replay")
        assert result.code == 0, (step, result.err)
    assert len(run_env.requests) == calls
    judge = json.loads((proj.root / "s2" / "summary.json").read_text())["flows"]["summarize"]["evaluations"]["judge"]
    assert judge["metrics"] == {"score": 1.0}
    # a live call needs the file's variables: exit 2 naming the first one unset
    result = cli("eval-run", "--flow", "summarize", "--state-dir", str(proj.root / "s2"), "--llm-cache", "off")
    assert result.code == 2
    assert "flows/judge.prompty: environment variable OPENAI_BASE_URL is not set" in result.err


@pytest.mark.executor
def test_slow_lines_time_out_and_down_endpoint_is_exit_3(project: Callable[..., Project],
                                                          cli: Callable[..., CliResult], run_env: FakeOpenAI,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    slow = '{"text": "SLOW one", "label": "x"}\n{"text": "quick", "label": "y"}\n'
    proj = project({**FILES, "data/pages.jsonl": slow}, base=False)
    run_env.slow_seconds = 4
    result = cli("batch-run", "--flow", "summarize", "--state-dir", str(proj.root / "state"), "--line-timeout", "1")
    run = summary(proj.root)["flows"]["summarize"]["run"]
    assert result.code == 0, result.err  # max_failed_lines: 1
    assert run["lines_failed"] == 1 and "timeout" in run["errors"][0]["message"].lower()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    result = cli("batch-run", "--flow", "summarize", "--state-dir", str(proj.root / "s2"))
    assert result.code == 3, result.err


def test_mapping_follows_prompt_flow(tmp_path: Path) -> None:
    (tmp_path / "judge.prompty").write_text(FILES["flows/judge.prompty"].replace("        ", ""), encoding="utf-8")
    info = inspect(tmp_path / "judge.prompty")
    assert info is not None
    data = tmp_path / "d.csv"
    data.write_text("label,answer\nApp,x\nMovie,y\nNone,z\n", encoding="utf-8")
    outputs = tmp_path / "outputs.jsonl"
    outputs.write_text('{"line_number": 0, "output": "A"}\n{"line_number": 2, "output": "C"}\n', encoding="utf-8")
    base = {"outputs": str(outputs), "data": str(data)}
    rows = read_rows(data)
    got = mapped_inputs(info, {"answer": "${run.outputs.output}", "extra": 3}, rows, base, "f/judge")
    assert got == [(0, {"answer": "A", "label": "App", "extra": 3}), (2, {"answer": "C", "label": "None", "extra": 3})]
    assert mapped_inputs(info, {}, rows, None, "f")[1] == (1, {"answer": "y", "label": "Movie"})
    with pytest.raises(UsageError, match=r"\$\{data.nope\}"):
        mapped_inputs(info, {"answer": "${data.nope}"}, rows, None, "f")


@pytest.mark.parametrize("outputs", [
    '{"line_number": 0, "output": 4}\n{"line_number": 1, "output": "7"}\n{"line_number": 2, "output": true}\n',
    '{"line_number": 0, "output": 4}\n{"line_number": 1, "output": 4.5}\n{"line_number": 2, "output": [0.1]}\n',
])
def test_values_reach_the_inputs_as_prompt_flow_maps_them(outputs: str, tmp_path: Path) -> None:
    """What prompt flow's own ``BatchInputsProcessor`` makes of the same data and base run, types included: a score
    of 4 beside 4.5 in a column is 4.0, as pandas reads it."""
    from promptflow.batch._batch_inputs_processor import BatchInputsProcessor
    from promptflow.contracts.flow import FlowInputDefinition
    from promptflow.contracts.tool import ValueType

    from tests.helpers.pf_reference import same

    (tmp_path / "judge.prompty").write_text(FILES["flows/judge.prompty"].replace("        ", ""), encoding="utf-8")
    info = inspect(tmp_path / "judge.prompty")
    assert info is not None
    data = tmp_path / "d.jsonl"
    data.write_text('{"label": 1, "n": 2}\n{"label": 2.5, "n": 3}\n{"label": 3, "n": 4}\n', encoding="utf-8")
    (tmp_path / "outputs.jsonl").write_text(outputs, encoding="utf-8")
    mapping = {"answer": "${run.outputs.output}", "label": "${data.label}"}
    got = mapped_inputs(info, mapping, read_rows(data), {"outputs": str(tmp_path / "outputs.jsonl"),
                                                         "data": str(data)}, "f/judge")
    processor = BatchInputsProcessor(tmp_path, {  # an input with a default takes no column unless mapped
        name: FlowInputDefinition(ValueType.OBJECT, default="d" if spec.has_default else None)
        for name, spec in info.inputs.items()})
    theirs = processor.process_batch_inputs({"data": str(data), "run.outputs": str(tmp_path / "outputs.jsonl")},
                                            mapping)
    expected = [(int(row.pop("line_number")), row) for row in theirs]
    assert same(got, expected), (got, expected)
    assert isinstance(got[0][1]["label"], float)


def test_judge_metrics_are_means_of_numeric_outputs() -> None:
    def line(n: int, outputs: object, status: str = "Completed") -> LineResult:
        return LineResult(n, status, {}, outputs, 0.1, {})

    lines = [line(0, {"score": 1, "ok": True, "why": "a", "x": "4"}),
             line(1, {"score": 0, "ok": False, "why": "b", "x": "n/a"}), line(2, None, "Failed")]
    assert mean_scores(lines) == {"score": 0.5, "ok": 0.5}


@pytest.mark.executor
def test_workers_lines_are_in_flight_together(project: Callable[..., Project], cli: Callable[..., CliResult],
                                              run_env: FakeOpenAI) -> None:
    """Four calls must be at the server at once to pass the barrier: --workers 4 runs four lines together."""
    import threading

    barrier = threading.Barrier(4, timeout=20)

    def answer(prompt: str) -> str:
        barrier.wait()
        return "ok"

    run_env.answer = answer
    rows = "".join(f'{{"text": "line {i}", "label": "x"}}\n' for i in range(8))
    proj = project({**FILES, "data/pages.jsonl": rows}, base=False)
    result = cli("batch-run", "--flow", "summarize", "--state-dir", str(proj.root / "state"), "--workers", "4")
    assert result.code == 0, result.err
    assert summary(proj.root)["flows"]["summarize"]["run"]["lines_failed"] == 0


@pytest.mark.parametrize(("data", "outputs"), [
    # positional data, a base run that lost its line 1
    ('{"label": "a"}\n{"label": "b"}\n{"label": "c"}\n',
     '{"line_number": 0, "output": 1}\n{"line_number": 2, "output": 3}\n'),
    # data numbering its own lines from 1 (upstream's evaluation data), the base run numbered the same way
    ('{"label": "a", "line_number": 1}\n{"label": "b", "line_number": 2}\n',
     '{"line_number": 1, "output": 1}\n{"line_number": 2, "output": 2}\n'),
    # numbered out of order, and a repeat (the last row wins)
    ('{"label": "a", "line_number": 1}\n{"label": "b", "line_number": 0}\n{"label": "c", "line_number": 1}\n',
     '{"line_number": 0, "output": 0}\n{"line_number": 1, "output": 1}\n'),
])
def test_lines_pair_with_the_base_run_as_prompt_flow_pairs_them(data: str, outputs: str, tmp_path: Path) -> None:
    """Data rows, the base run's data and its outputs keyed as prompt flow keys them: by their own line_number where
    a list has one, else by position."""
    from promptflow._constants import LINE_NUMBER_KEY
    from promptflow.batch._batch_inputs_processor import BatchInputsProcessor
    from promptflow.contracts.flow import FlowInputDefinition
    from promptflow.contracts.tool import ValueType

    from tests.helpers.pf_reference import same

    (tmp_path / "judge.prompty").write_text(FILES["flows/judge.prompty"].replace("        ", ""), encoding="utf-8")
    info = inspect(tmp_path / "judge.prompty")
    assert info is not None
    (tmp_path / "d.jsonl").write_text(data, encoding="utf-8")
    (tmp_path / "outputs.jsonl").write_text(outputs, encoding="utf-8")
    mapping = {"answer": "${run.outputs.output}", "label": "${data.label}"}
    dirs = {"data": str(tmp_path / "d.jsonl"), "run.outputs": str(tmp_path / "outputs.jsonl"),
            "run.inputs": str(tmp_path / "d.jsonl")}
    got = mapped_inputs(info, mapping, read_rows(tmp_path / "d.jsonl"),
                        {"outputs": dirs["run.outputs"], "data": dirs["run.inputs"]}, "f/judge")
    processor = BatchInputsProcessor(tmp_path, {name: FlowInputDefinition(ValueType.OBJECT, default="d" if
                                                                          spec.has_default else None)
                                                for name, spec in info.inputs.items()})
    theirs = sorted(((int(row.pop(LINE_NUMBER_KEY)), row) for row in processor.process_batch_inputs(dirs, mapping)),
                    key=lambda pair: pair[0])
    assert same(got, theirs), (got, theirs)


def test_an_evaluation_whose_data_does_not_pair_with_the_run_is_refused_as_prompt_flow_refuses_it(
        tmp_path: Path) -> None:
    (tmp_path / "judge.prompty").write_text(FILES["flows/judge.prompty"].replace("        ", ""), encoding="utf-8")
    info = inspect(tmp_path / "judge.prompty")
    assert info is not None
    (tmp_path / "own.jsonl").write_text('{"label": "a"}\n', encoding="utf-8")
    (tmp_path / "base.jsonl").write_text('{"label": "a"}\n{"label": "b"}\n', encoding="utf-8")
    (tmp_path / "outputs.jsonl").write_text('{"line_number": 0, "output": 1}\n', encoding="utf-8")
    with pytest.raises(UsageError, match="have 1 and 2 lines and neither numbers them"):
        mapped_inputs(info, {"answer": "${run.outputs.output}", "label": "${data.label}"},
                      read_rows(tmp_path / "own.jsonl"),
                      {"outputs": str(tmp_path / "outputs.jsonl"), "data": str(tmp_path / "base.jsonl")}, "f/judge")
