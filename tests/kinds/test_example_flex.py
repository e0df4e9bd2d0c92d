"""The flex + prompty example lints clean next to a DAG flow, and its defects are caught."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.kinds import KINDS
from llmops_ci.lint.project import LintRequest, lint
from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import CliResult, classify_by_url, processes_using, snapshot

EXAMPLES = Path(__file__).parent.parent.parent / "examples"
EXAMPLE = EXAMPLES / "web-classification-flex"


def test_example_lints_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLES.parent)
    report = lint(LintRequest(config=EXAMPLE / "llmops.yaml"))
    assert report.findings == []
    assert (report.flows_checked, report.evaluations_checked) == (2, 2)  # the flex flow and the DAG, each evaluated


def test_example_interfaces() -> None:
    flow = KINDS["flex"].inspect(EXAMPLE / "flows" / "classify")
    assert set(flow.inputs) == {"url", "text"} and flow.outputs == {"category", "evidence"}
    assert [(c.connection, c.path.endswith("classify.prompty")) for c in flow.connections] == [("openai", True)]
    evaluation = KINDS["flex"].inspect(EXAMPLE / "flows" / "eval-accuracy")
    assert set(evaluation.inputs) == {"groundtruth", "prediction"} and evaluation.outputs == {"grade", "correct"}


def test_example_defects_are_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(EXAMPLE, tmp_path / "web-classification-flex")
    shutil.copytree(EXAMPLES / "web-classification", tmp_path / "web-classification")
    root = tmp_path / "web-classification-flex"
    prompty = root / "flows" / "classify" / "classify.prompty"
    prompty.write_text(prompty.read_text().replace("connection: openai", "connection: open_ai")
                       .replace("Text content: {{ text_content }}\nOUTPUT:", "Text content: {{ text }}\nOUTPUT:"))
    code = root / "flows" / "classify" / "classify.py"
    code.write_text(code.read_text().replace("def classify(url: str, text: str = \"\")", "def classify(url: str)"))
    cfg = root / "llmops.yaml"
    cfg.write_text(cfg.read_text().replace("prediction: ${run.outputs.category}", "prediction: ${run.outputs.label}",
                                           1))
    monkeypatch.chdir(root)
    got = sorted((f.rule, f.path) for f in lint(LintRequest(config=cfg)).findings)
    assert got == [
        ("connection-undeclared", "flows/classify/classify.prompty"),
        ("flex-input-mismatch", "flows/classify/flow.flex.yaml"),  # inputs: declares text
        ("flex-input-mismatch", "flows/classify/flow.flex.yaml"),  # sample.inputs gives text
        ("mapping-input-unknown", "llmops.yaml"),
        ("mapping-output-unknown", "llmops.yaml"),
        ("prompt-var-unbound", "flows/classify/classify.prompty"),
        ("prompty-input-unused", "flows/classify/classify.prompty"),
    ]


RUN_IN_PROMPT_FLOW = """
import json, sys
from promptflow.client import PFClient
from promptflow.entities import OpenAIConnection
args = json.loads(sys.argv[1])
pf = PFClient()
pf.connections.create_or_update(OpenAIConnection(name="openai", api_key="test-key", base_url=args["base_url"]))
for flow, inputs in args["tests"]:
    print("RESULT " + json.dumps(pf.test(flow=flow, inputs=inputs)))
"""


@pytest.mark.executor
def test_snapshots_run_in_prompt_flow(tmp_path: Path) -> None:
    """The kinds' snapshots are what prompt flow's executor is given: the example's flex flow (calling its
    prompty), its flex evaluation, and an upstream prompty file, over HTTP to the fake server."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    from llmops_ci.engines.promptflow.home import PFHome
    from tests.fakes.openai import FakeOpenAI
    from tests.test_examples import classify_by_url

    home = PFHome(tmp_path / "home").prepare()
    flex, prompty = KINDS["flex"], KINDS["prompty"]
    classify = flex.snapshot(flex.inspect(EXAMPLE / "flows" / "classify"), tmp_path / "s1")  # type: ignore[attr-defined]
    grade = flex.snapshot(flex.inspect(EXAMPLE / "flows" / "eval-accuracy"), tmp_path / "s2")  # type: ignore[attr-defined]
    basic = Path(__file__).parent / "data" / "prompty" / "basic" / "basic.prompty"
    single = prompty.snapshot(prompty.inspect(basic), tmp_path / "s3")  # type: ignore[attr-defined]
    server = FakeOpenAI(answer=classify_by_url).start()
    try:
        # short: multiprocessing's sockets go below it (a Unix socket path may not exceed 107 bytes)
        tmp = Path(tempfile.mkdtemp(prefix="llmops-t-"))
        env = home.environment(os.environ, tmp)
        env.update({"AZURE_OPENAI_ENDPOINT": server.url, "AZURE_OPENAI_API_KEY": "test-key",
                    "OPENAI_API_VERSION": "2024-06-01"})
        args = {"base_url": server.url + "/v1", "tests": [
            [str(classify.folder), {"url": "https://www.imdb.com/title/tt0111161/", "text": "<b>Shawshank</b>"}],
            [str(grade.folder), {"groundtruth": "Movie", "prediction": "movie"}],
            [str(single.entry), {"question": "See https://arxiv.org/abs/1706.03762"}],
        ]}
        proc = subprocess.run([sys.executable, "-c", RUN_IN_PROMPT_FLOW, json.dumps(args)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert results[0] == {"category": "Movie", "evidence": "Url"}
    assert results[1] == {"grade": "Correct", "correct": 1.0}
    assert results[2] == '{"category": "Academic", "evidence": "Url"}'
    assert [r["path"].split("?")[0] for r in server.requests] == [
        "/v1/chat/completions", "/openai/deployments/gpt-4o/chat/completions"]


@pytest.mark.executor
def test_example_pr_runs_offline_from_its_cassettes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    cli: Callable[..., CliResult]) -> None:
    """The README's path: ``pr`` over the flex flow and the DAG, replayed from the shipped cassettes, no key."""
    server = FakeOpenAI(answer=classify_by_url).start()
    try:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")  # reachable, yet it must not be called
        monkeypatch.chdir(EXAMPLES.parent)
        before = snapshot(EXAMPLE)
        result = cli("pr", "--config", str(EXAMPLE / "llmops.yaml"), "--state-dir", str(tmp_path / "state"))
        assert result.code == 0, result.err
        flows = json.loads((tmp_path / "state" / "summary.json").read_text())["flows"]
        for name in ("classify", "classify-dag"):
            run = flows[name]["run"]
            assert (run["lines_total"], run["lines_failed"]) == (42, 0)
            assert run["llm_cache"]["hits"] == 42 and run["llm_cache"]["misses"] == 0 and run["tokens"]["total"] > 0
            assert flows[name]["evaluations"]["accuracy"]["metrics"]["accuracy"] == pytest.approx(41 / 42, abs=1e-4)
            assert flows[name]["gate"]["passed"] is True
        assert server.requests == []
        assert snapshot(EXAMPLE) == before
        assert processes_using(tmp_path) == []
    finally:
        server.stop()
