"""The flex + prompty example lints clean next to a DAG flow, and its defects are caught."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmops_ci.kinds import KINDS
from llmops_ci.lint.project import LintRequest, lint

EXAMPLES = Path(__file__).parent.parent.parent / "examples"
EXAMPLE = EXAMPLES / "web-classification-flex"


def test_example_lints_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLES.parent)
    report = lint(LintRequest(config=EXAMPLE / "llmops.yaml"))
    assert report.findings == []
    assert report.flows_checked == 3  # flex flow, flex evaluation, the DAG


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
