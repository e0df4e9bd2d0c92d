"""Evaluator and scorer evaluations run in the real libraries over a real run (prompty 2.x flows against the fake
OpenAI server), compared line by line with calling the evaluator directly on the same inputs; the LLM judge is
recorded and then replayed with the server down."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import RUN_PROJECT, CliResult, Project, processes_using
from tests.project.test_evaluators import needs_evaluation, needs_mlflow

pytestmark = [pytest.mark.executor, needs_evaluation, needs_mlflow]

FLOW = """\
---
name: {name}
model:
  id: gpt-4o-mini
  provider: openai
  connection:
    kind: reference
    name: openai
inputs:
  - name: text
    kind: string
---
system:
{system}

user:
{{{{text}}}}
"""
DATA = [
    {"text": "App", "label": "App"},
    {"text": "Movie", "label": "Movie"},
    {"text": "the movie app", "label": "the app"},
    {"text": "Nothing", "label": "None"},
    {"text": "@admin <b>hi</b> [x](http://e.test) ::error::", "label": "x"},
]
CONFIG = """\
version: 1
connections:
  openai:
    type: open_ai
    base_url: ${env:OPENAI_BASE_URL}
    api_key: ${env:OPENAI_API_KEY}
flows:
  old:
    path: flows/old.prompty
    data: data/qa.jsonl
    column_mapping:
      text: ${data.text}
    evaluations:
      similarity: &similarity
        evaluator: azure.ai.evaluation:SimilarityEvaluator
        init:
          model_config: {connection: openai, model: gpt-4o-mini}
        column_mapping:
          query: ${data.text}
          response: ${run.outputs.output}
          ground_truth: ${data.label}
        scores: {similarity: similarity}
  new:
    path: flows/new.prompty
    data: data/qa.jsonl
    column_mapping:
      text: ${data.text}
    parity:
      of: old
      outputs: {output: output}
      method: METHOD
    evaluations:
      similarity: *similarity
      f1:
        evaluator: azure.ai.evaluation:F1ScoreEvaluator
        init: {threshold: 0.5}
        column_mapping:
          response: ${run.outputs.output}
          ground_truth: ${data.label}
      match:
        scorer: my_scorers:same_label
        column_mapping:
          outputs: ${run.outputs.output}
          expectations: ${data.label}
      short:
        scorer: mlflow.genai.scorers:ResponseLength
        init: {max_length: 12}
        column_mapping:
          outputs: ${run.outputs.output}
    gate:
      parity.agreement: {min: 0.95}
      similarity.similarity: {max_drop: 0.5, against: old}
"""
SCORERS = """\
from mlflow.genai.scorers import scorer


@scorer
def same_label(outputs, expectations):
    return outputs == expectations["expected_response"]
"""


def answer(prompt: str) -> str:
    """The flows echo the text (upper-cased when told to SHOUT); the similarity judge answers the JSON its prompt
    asks for: 5 when the answers are equal, 1 when not (a real judge's scale, 1 to 5)."""
    if "predicted answer:" in prompt:
        truth = re.findall(r"correct answer:(.*)", prompt)[-1].strip()
        predicted = re.findall(r"predicted answer:(.*)", prompt)[-1].strip()
        return json.dumps({"reason": "compared", "score": 5 if truth == predicted else 1, "status": "completed"})
    last = prompt.strip().splitlines()[-1].strip()
    return last.upper() if "SHOUT" in prompt else last


def write_project(root: Path, method: str = "exact") -> None:
    (root / "flows").mkdir(parents=True)
    (root / "data").mkdir()
    for name in ("old", "new"):
        (root / "flows" / f"{name}.prompty").write_text(FLOW.format(name=name, system="Answer with the label."))
    (root / "data" / "qa.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DATA))
    (root / "my_scorers.py").write_text(SCORERS)
    (root / "llmops.yaml").write_text(CONFIG.replace("METHOD", method))


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, FakeOpenAI]]:
    root = tmp_path / "proj"
    write_project(root)
    server = FakeOpenAI(answer=answer).start()
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-eval-" + "e" * 20)
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED", "true")  # the direct calls in this process
    monkeypatch.chdir(root)
    yield root, server
    server.stop()
    assert processes_using(tmp_path) == []


def lines(root: Path, label: str) -> dict[int, dict]:
    flow, _, evaluation = label.partition("/")
    path = root / ".llmops" / "runs" / flow / ("evals/" + evaluation if evaluation else "") / "lines.jsonl"
    return {r["line"]: r for r in map(json.loads, path.read_text().splitlines())}


def summary(root: Path) -> dict:
    return json.loads((root / ".llmops" / "summary.json").read_text())


def test_evaluators_and_scorers_score_a_run_as_called_directly(served: tuple[Path, FakeOpenAI],
                                                               cli: Callable[..., CliResult]) -> None:
    from azure.ai.evaluation import F1ScoreEvaluator, SimilarityEvaluator
    from mlflow.genai.scorers import ResponseLength

    root, server = served
    assert cli("lint").code == 0
    result = cli("batch-run", "--flow", "new")
    assert result.code == 0 and "also running 'old', which its parity compares with" in result.err
    shutil.rmtree(root / ".llmops" / "runs" / "old")
    result = cli("eval-run", "--flow", "new", "--llm-cache", "record")
    assert result.code == 2 and "flow 'old' has no batch run" in result.err  # parity cannot pair: said up front
    assert "new/f1" not in result.err
    assert cli("batch-run", "--flow", "old").code == 0
    result = cli("eval-run", "--flow", "new", "--llm-cache", "record")
    assert result.code == 0, result.err
    outputs = {n: r["outputs"]["output"] for n, r in lines(root, "new").items()}
    assert outputs[0] == "App"

    # the official answers: each evaluator called directly on the same inputs
    f1 = F1ScoreEvaluator(threshold=0.5)
    judge = SimilarityEvaluator(model_config={"type": "openai", "base_url": server.url + "/v1",
                                              "api_key": "sk-direct", "model": "gpt-4o-mini"})
    short = ResponseLength(max_length=12)
    scored = {name: lines(root, f"new/{name}") for name in ("f1", "similarity", "match", "short")}
    for n, row in enumerate(DATA):
        direct = f1(response=outputs[n], ground_truth=row["label"])
        assert scored["f1"][n]["outputs"] == json.loads(json.dumps(direct))  # every output, as the library gives it
        direct = judge(query=row["text"], response=outputs[n], ground_truth=row["label"])
        for key in ("similarity", "similarity_result", "similarity_reason", "similarity_threshold"):
            assert scored["similarity"][n]["outputs"][key] == direct[key]
        assert scored["match"][n]["outputs"]["same_label"] == float(outputs[n] == row["label"])
        expected = 1.0 if short(outputs=outputs[n]).value == "yes" else 0.0
        assert scored["short"][n]["outputs"]["response_length"] == expected
    evaluations = summary(root)["flows"]["new"]["evaluations"]
    f1_mean = sum(F1ScoreEvaluator()(response=outputs[n], ground_truth=r["label"])["f1_score"]
                  for n, r in enumerate(DATA)) / len(DATA)
    assert evaluations["f1"]["metrics"]["f1_score"] == pytest.approx(f1_mean)
    assert evaluations["similarity"]["metrics"]["similarity"] == pytest.approx(
        sum(5 if outputs[n] == r["label"] else 1 for n, r in enumerate(DATA)) / len(DATA))
    assert evaluations["match"]["metrics"]["same_label/mean"] == pytest.approx(2 / 5)  # MLflow's own aggregation
    assert "response_length/mean" in evaluations["short"]["metrics"]
    # the judge's calls were recorded (tokens from its own usage report), the code evaluators made none
    assert (root / "cassettes" / "new.similarity.json").is_file()
    assert sum(r["tokens"].get("total", 0) for r in scored["similarity"].values()) > 0

    # replayed with the server down: the same scores, no call
    server.stop()
    calls = len(server.requests)
    replay = cli("eval-run", "--flow", "new", "--llm-cache", "replay")
    assert replay.code == 0, replay.err
    again = lines(root, "new/similarity")
    assert {n: r["outputs"]["similarity"] for n, r in again.items()} == {
        n: r["outputs"]["similarity"] for n, r in scored["similarity"].items()}
    assert len(server.requests) == calls
    assert summary(root)["flows"]["new"]["evaluations"]["similarity"]["run"] != evaluations["similarity"]["run"]


def test_parity_gate_passes_on_agreeing_flows_and_fails_on_a_changed_prompt(served: tuple[Path, FakeOpenAI],
                                                                           cli: Callable[..., CliResult]) -> None:
    root, _ = served
    config = (root / "llmops.yaml").read_text()
    # only what this test needs: the judge on both flows and the parity gate
    for name in ("f1", "match", "short"):
        config = re.sub(rf"      {name}:\n(        .*\n)+", "", config)
    (root / "llmops.yaml").write_text(config)
    assert cli("lint").code == 0
    assert cli("batch-run").code == 0
    assert cli("eval-run").code == 0
    gate = cli("gate")
    assert gate.code == 0, gate.err + gate.out
    entry = summary(root)["flows"]["new"]["evaluations"]["parity"]
    assert entry["metrics"]["agreement"] == 1.0 and entry["metrics"]["lines"] == len(DATA)
    assert [r["outputs"]["agreement"] for r in lines(root, "new/parity").values()] == [1.0] * len(DATA)
    checks = {c["metric"]: c for c in summary(root)["flows"]["new"]["gate"]["checks"]}
    assert checks["similarity.similarity"]["baseline"] == checks["similarity.similarity"]["value"]
    assert "against flow 'old'" in checks["similarity.similarity"]["note"]

    # the migration changes its prompt: every answer differs from the old flow's
    (root / "flows" / "new.prompty").write_text(FLOW.format(name="new", system="SHOUT the label."))
    assert cli("batch-run", "--flow", "new").code == 0
    assert cli("eval-run", "--flow", "new").code == 0
    gate = cli("gate")
    assert gate.code == 1
    flow = summary(root)["flows"]["new"]
    assert flow["evaluations"]["parity"]["metrics"]["agreement"] == pytest.approx(0.0)
    failed = {c["metric"] for c in flow["gate"]["checks"] if not c["passed"]}
    assert failed == {"parity.agreement", "similarity.similarity"}  # 5 -> 1 on every line, against the old flow
    comment = cli("comment")
    text = (root / ".llmops" / "comment.md").read_text()
    assert "### Parity" in text and "agreement 0 on 5 lines, 5 disagree" in text
    assert "| 1 " in text and "APP" in text  # the first disagreeing line, both sides
    assert "@admin" not in text and "<b>" not in text and "\n::error" not in text  # flow text made inert
    assert comment.code == 0


def test_parity_judged_by_an_evaluator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       cli: Callable[..., CliResult]) -> None:
    root = tmp_path / "proj"
    write_project(root, method="similarity")
    config = (root / "llmops.yaml").read_text()
    for name in ("f1", "match", "short"):
        config = re.sub(rf"      {name}:\n(        .*\n)+", "", config)
    (root / "llmops.yaml").write_text(config.replace("      similarity.similarity: {max_drop: 0.5, against: old}\n",
                                                     ""))
    (root / "flows" / "new.prompty").write_text(FLOW.format(name="new", system="SHOUT the label."))
    server = FakeOpenAI(answer=lambda p: answer(p).replace("MOVIE", "Movie")).start()
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-eval-" + "e" * 20)
    monkeypatch.chdir(root)
    try:
        assert cli("batch-run").code == 0
        result = cli("eval-run", "--flow", "new")
        assert result.code == 0, result.err
    finally:
        server.stop()
    entry = summary(root)["flows"]["new"]["evaluations"]["parity"]
    # the judge compares the new answer with the old one: only 'Movie' (kept as it was) agrees
    judged = lines(root, "new/parity")
    assert [r["outputs"]["agreement"] for r in judged.values()] == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert judged[1]["outputs"]["judge"]["similarity_result"] == "pass"
    assert entry["metrics"]["agreement"] == pytest.approx(0.2)
    assert entry["metrics"]["similarity"] == pytest.approx((1 + 5 + 1 + 1 + 1) / 5)  # the judge's own metric
    assert cli("gate").code == 1


def test_evaluator_scores_a_dag_run_beside_an_evaluation_flow(project: Callable[..., Project], run_env: FakeOpenAI,
                                                               cli: Callable[..., CliResult]) -> None:
    """A prompt flow DAG run (its executor) scored by an evaluation flow and by F1ScoreEvaluator on the same lines;
    the line that failed in the batch run is left out of both, as prompt flow leaves it out."""
    from azure.ai.evaluation import F1ScoreEvaluator

    data = '{"text": "a b", "expected": "A B"}\n{"text": "boom", "expected": "BOOM"}\n{"text": "c", "expected": "X"}\n'
    config = RUN_PROJECT["llmops.yaml"].replace("""\
                  expected: ${data.expected}
""", """\
                  expected: ${data.expected}
              f1:
                evaluator: azure.ai.evaluation:F1ScoreEvaluator
                column_mapping:
                  response: ${run.outputs.loud}
                  ground_truth: ${data.expected}
              exact:
                evaluator: evals.exact:exact_match
                column_mapping:
                  response: ${run.outputs.loud}
                  expected: ${data.expected}
            max_failed_lines: 1
""")
    function = "def exact_match(response, expected):\n    return {'exact': float(response == expected)}\n"
    proj = project({**RUN_PROJECT, "llmops.yaml": config, "data/echo.jsonl": data, "evals/__init__.py": "",
                    "evals/exact.py": function}, base=False)
    assert cli("lint").code == 0
    assert cli("batch-run", "--flow", "echo").code == 0
    result = cli("eval-run", "--flow", "echo")
    assert result.code == 0, result.err
    scored = {r["line"]: r for r in map(json.loads, proj.read(".llmops/runs/echo/evals/f1/lines.jsonl").splitlines())}
    flowed = {r["line"] for r in map(json.loads, proj.read(".llmops/runs/echo/evals/match/lines.jsonl").splitlines())}
    assert set(scored) == flowed == {0, 2}
    direct = F1ScoreEvaluator()
    assert scored[0]["outputs"]["f1_score"] == direct(response="A B", ground_truth="A B")["f1_score"] == 1.0
    assert scored[2]["outputs"]["f1_score"] == direct(response="C", ground_truth="X")["f1_score"] == 0.0
    evaluations = json.loads(proj.read(".llmops/summary.json"))["flows"]["echo"]["evaluations"]
    assert evaluations["f1"]["metrics"]["f1_score"] == 0.5
    assert evaluations["exact"]["metrics"] == {"exact": 0.5}  # a module:function evaluator of the project
    # counted like the evaluation flow's run over the same base run
    assert (evaluations["f1"]["lines_total"], evaluations["f1"]["lines_failed"]) == (
        evaluations["match"]["lines_total"], evaluations["match"]["lines_failed"])


def test_a_hung_scorer_line_times_out_and_the_others_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             cli: Callable[..., CliResult]) -> None:
    root = tmp_path / "proj"
    write_project(root)
    config = (root / "llmops.yaml").read_text()
    for name in ("f1", "similarity", "short"):
        config = re.sub(rf"      {name}:\n(        .*\n)+", "", config)
    config = config.replace("      similarity: &similarity\n", "      never: &similarity\n").replace(
        "      similarity: *similarity\n", "")
    config = re.sub(r"    gate:\n(      .*\n)+", "", config)
    (root / "llmops.yaml").write_text(config)
    (root / "my_scorers.py").write_text(SCORERS.replace('    return outputs ==', '    import time\n'
                                        '    if outputs == "Movie":\n        time.sleep(600)\n    return outputs =='))
    monkeypatch.chdir(root)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # declared, never called
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unused-" + "u" * 20)
    kept_runs(root)
    started = time.monotonic()
    result = cli("eval-run", "--flow", "new", "--line-timeout", "3")
    assert time.monotonic() - started < 120
    assert result.code == 0, result.err
    scored = lines(root, "new/match")
    assert scored[1]["status"] == "Failed" and "timeout" in scored[1]["error"]
    assert [scored[n]["status"] for n in (0, 2, 3, 4)] == ["Completed"] * 4
    assert summary(root)["flows"]["new"]["evaluations"]["match"]["lines_failed"] == 1


def kept_runs(root: Path) -> None:
    """Both flows' batch runs as the state dir keeps them (each line's output is its text): no server needed."""
    for flow in ("old", "new"):
        folder = root / ".llmops" / "runs" / flow
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "run.json").write_text(json.dumps({"name": f"{flow}_run", "status": "completed"}))
        (folder / "lines.jsonl").write_text("".join(json.dumps({"line": n, "status": "Completed", "inputs": row,
                                                                "outputs": {"output": row["text"]}}) + "\n"
                                                    for n, row in enumerate(DATA)))
        base = root / ".llmops" / "runs" / ".base" / f"{flow}_run"
        base.mkdir(parents=True)
        (base / "outputs.jsonl").write_text("".join(json.dumps({"output": row["text"], "line_number": n}) + "\n"
                                                    for n, row in enumerate(DATA)))
        (base / "llmops-run.json").write_text(json.dumps({"data": str(root / "data" / "qa.jsonl")}))


def correctness_judge(prompt: str) -> str:
    """MLflow's Correctness prompt asks for {"rationale", "result": "yes|no"}: yes when the claim is in the
    document (the expected response)."""
    claim = re.findall(r"<claim>(.*?)</claim>", prompt, re.S)[-1].strip()
    document = re.findall(r"<document>(.*?)</document>", prompt, re.S)[-1]
    return json.dumps({"rationale": "Let's think step by step: compared.",
                       "result": "yes" if claim and document.rstrip().endswith(claim) else "no"})


def test_an_llm_judged_mlflow_scorer_is_recorded_and_replayed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              cli: Callable[..., CliResult]) -> None:
    """MLflow's judges read their endpoint from the environment (model openai:/...): it goes through the proxy."""
    root = tmp_path / "proj"
    write_project(root)
    config = (root / "llmops.yaml").read_text()
    for name in ("f1", "similarity", "short"):
        config = re.sub(rf"      {name}:\n(        .*\n)+", "", config)
    config = config.replace("      similarity: &similarity\n", "      never: &similarity\n").replace(
        "      similarity: *similarity\n", "")
    config = re.sub(r"    gate:\n(      .*\n)+", "", config)
    config = config.replace("        scorer: my_scorers:same_label\n",
                            "        scorer: mlflow.genai.scorers:Correctness\n"
                            "        init: {model: 'openai:/gpt-4o-mini'}\n")
    config = config.replace("          outputs: ${run.outputs.output}\n          expectations: ${data.label}\n",
                            "          inputs: ${data.text}\n          outputs: ${run.outputs.output}\n"
                            "          expectations: ${data.label}\n")
    (root / "llmops.yaml").write_text(config)
    kept_runs(root)
    server = FakeOpenAI(answer=correctness_judge).start()
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-judge-" + "j" * 20)
    monkeypatch.chdir(root)
    try:
        assert cli("lint").code == 0
        result = cli("eval-run", "--flow", "new", "--llm-cache", "record")
        assert result.code == 0, result.err
    finally:
        server.stop()
    recorded = lines(root, "new/match")
    assert len(server.requests) == len(DATA)  # every judge call went through the proxy, and was recorded
    expected = [1.0 if row["text"].endswith(row["label"]) else 0.0 for row in DATA]
    assert [recorded[n]["outputs"]["correctness"] for n in range(len(DATA))] == expected
    assert recorded[0]["outputs"]["correctness_label"] == "yes"
    metrics = summary(root)["flows"]["new"]["evaluations"]["match"]["metrics"]
    assert metrics["correctness/mean"] == pytest.approx(sum(expected) / len(DATA))

    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens: replay only
    result = cli("eval-run", "--flow", "new", "--llm-cache", "replay")
    assert result.code == 0, result.err
    assert {n: r["outputs"] for n, r in lines(root, "new/match").items()} == {
        n: r["outputs"] for n, r in recorded.items()}
