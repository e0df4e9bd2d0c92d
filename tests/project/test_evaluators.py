"""Evaluator and scorer evaluations, parity and against: found in source (never imported by lint), and every lint
rule of llmops_ci/lint/evaluators.py with a breaking case and a clean near miss on the base project."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmops_ci.lint.evaluators import RULES
from llmops_ci.project.evaluators import Located, locate
from tests.helpers.projects import Project

CFG = "llmops.yaml"
HAS_EVALUATION = importlib.util.find_spec("azure") is not None and (
    Path(next(iter(importlib.util.find_spec("azure").submodule_search_locations or [""]))) / "ai" / "evaluation"
).is_dir()
HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
needs_evaluation = pytest.mark.skipif(not HAS_EVALUATION, reason="azure-ai-evaluation ([agents] extra) not installed")
needs_mlflow = pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow ([mlflow] extra) not installed")

Edit = Callable[[Project], None]


def add_evaluation(block: str) -> Edit:
    """An evaluation added to the base project's flow 'classify' (after its 'accuracy' evaluation)."""
    def run(p: Project) -> None:
        p.replace(CFG, "    gate:\n      accuracy.accuracy", textwrap.indent(textwrap.dedent(block), "      ")
                  + "    gate:\n      accuracy.accuracy")
    return run


SECOND_FLOW = """\
  classify2:
    path: flows/classify
    data: data/classify.jsonl
    column_mapping:
      text: ${data.text}
    connections:
      classify: {connection: openai, model: gpt-4o-mini}
"""


def add_flow(extra: str = "", evaluation: bool = False, name: str = "accuracy") -> Edit:
    """A second flow, 'classify2' (the same DAG on the same data), with ``extra`` lines in its entry."""
    def run(p: Project) -> None:
        block = SECOND_FLOW + textwrap.indent(textwrap.dedent(extra).rstrip("\n") + "\n" if extra else "", "    ")
        if evaluation:
            block += (f"    evaluations:\n      {name}:\n        path: flows/eval\n        column_mapping:\n"
                      "          groundtruth: ${data.label}\n          prediction: ${run.outputs.category}\n")
        p.write(CFG, p.read(CFG) + block)
    return run


def both(*edits: Edit) -> Edit:
    def run(p: Project) -> None:
        for e in edits:
            e(p)
    return run


@dataclass(frozen=True)
class Case:
    bad: Edit
    good: Edit
    says: str


F1 = """\
f1:
  evaluator: azure.ai.evaluation:{name}
  init: {{threshold: 0.5}}
  column_mapping:
    {param}: ${{run.outputs.category}}
    ground_truth: ${{data.label}}
"""
SIMILARITY = """\
similarity:
  evaluator: azure.ai.evaluation:SimilarityEvaluator
  init:
    model_config: {{connection: {conn}, model: gpt-4o-mini}}
  column_mapping:
    query: ${{data.text}}
    response: ${{run.outputs.category}}
    ground_truth: ${{data.label}}
"""
MY_SCORERS = """\
from mlflow.genai.scorers import scorer


{decorator}
def same_label(outputs, expectations):
    return outputs == expectations["expected_response"]
"""
SCORER = """\
same:
  scorer: my_scorers:same_label
  column_mapping:
    outputs: ${run.outputs.category}
    expectations: ${data.label}
"""


def _against(p: Project) -> None:
    p.replace(CFG, "accuracy.accuracy: {min: 0.8, max_drop: 0.05}", "accuracy.accuracy: {min: 0.8, max_drop: 0.05, "
              "against: classify2}")


AGAINST: Edit = _against


def _other_data(p: Project) -> None:
    p.write("data/other.jsonl", p.read("data/classify.jsonl"))
    p.write(CFG, p.read(CFG).replace("    data: data/classify.jsonl\n    column_mapping:\n      text: ${data.text}\n"
                                     "    connections:\n      classify: {connection: openai, model: gpt-4o-mini}\n"
                                     "    parity", "    data: data/other.jsonl\n    column_mapping:\n      text: "
                                     "${data.text}\n    connections:\n      classify: {connection: openai, model: "
                                     "gpt-4o-mini}\n    parity"))


def _same_data_other_spelling(p: Project) -> None:
    text = p.read(CFG)
    at = text.rindex("    data: data/classify.jsonl")
    p.write(CFG, text[:at] + "    data: data/../data/classify.jsonl" + text[at + len("    data: data/classify.jsonl"):])
JUDGE = """\
evaluations:
  f1:
    evaluator: azure.ai.evaluation:F1ScoreEvaluator
    column_mapping:
      response: ${run.outputs.category}
      ground_truth: ${data.label}
"""
CASES = {
    "evaluator-unresolvable": Case(
        add_evaluation(F1.format(name="F1ScoreEvaluatr", param="response")),
        add_evaluation(F1.format(name="F1ScoreEvaluator", param="response")), "has no 'F1ScoreEvaluatr'"),
    "evaluator-init-mismatch": Case(
        add_evaluation(F1.format(name="F1ScoreEvaluator", param="response").replace("threshold", "threshhold")),
        add_evaluation(F1.format(name="F1ScoreEvaluator", param="response")), "did you mean 'threshold'?"),
    "evaluator-param-unknown": Case(
        add_evaluation(F1.format(name="F1ScoreEvaluator", param="answer")),
        add_evaluation(F1.format(name="F1ScoreEvaluator", param="response")), "maps 'answer'"),
    "evaluator-connection-undeclared": Case(
        add_evaluation(SIMILARITY.format(conn="openia")), add_evaluation(SIMILARITY.format(conn="openai")),
        "did you mean 'openai'?"),
    "parity-flow-unknown": Case(
        add_flow("parity: {of: clasify, outputs: {category: category}}"),
        add_flow("parity: {of: classify, outputs: {category: category}}"), "did you mean 'classify'?"),
    "parity-output-unknown": Case(
        add_flow("parity: {of: classify, outputs: {category: categroy}}"),
        add_flow("parity: {of: classify, outputs: {category: category}, method: normalized}"),
        "flow 'classify' has no output 'categroy'"),
    "parity-method-unknown": Case(
        add_flow("parity: {of: classify, outputs: {category: category}, method: exakt}"),
        add_flow("parity: {of: classify, outputs: {category: category}, method: f1}\n" + JUDGE),
        "did you mean 'exact'?"),
    "parity-data-differs": Case(
        both(add_flow("parity: {of: classify, outputs: {category: category}}"), _other_data),
        both(add_flow("parity: {of: classify, outputs: {category: category}}"), _same_data_other_spelling),
        "both must read the same data file"),
    "parity-name-taken": Case(
        add_flow("parity: {of: classify, outputs: {category: category}}", evaluation=True, name="parity"),
        add_flow("parity: {of: classify, outputs: {category: category}}", evaluation=True, name="parity2"),
        "rename this evaluation"),
    "gate-against-invalid": Case(
        both(add_flow(), AGAINST), both(add_flow(evaluation=True), AGAINST), "does not evaluate 'accuracy.accuracy'"),
}


def test_every_rule_has_a_case() -> None:
    assert set(CASES) == set(RULES)


@needs_evaluation
@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires(rule: str, project: Callable[..., Project]) -> None:
    proj = project()
    CASES[rule].bad(proj)
    findings = proj.lint().findings
    hits = [f for f in findings if f.rule == rule]
    assert hits, f"{rule} did not fire; got {[(f.rule, f.message) for f in findings]}"
    assert all(h.path == CFG and h.line is not None for h in hits)
    assert any(CASES[rule].says in h.message for h in hits), [h.message for h in hits]


@needs_evaluation
@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_near_miss_is_clean(rule: str, project: Callable[..., Project]) -> None:
    proj = project()
    CASES[rule].good(proj)
    findings = proj.lint().findings
    assert findings == [], [(f.rule, f.line, f.message) for f in findings]


@needs_evaluation
def test_similarity_without_model_config_and_gate_on_parity(project: Callable[..., Project]) -> None:
    proj = project()
    add_evaluation(SIMILARITY.format(conn="openai").replace(
        "  init:\n    model_config: {connection: openai, model: gpt-4o-mini}\n", ""))(proj)
    found = [(f.rule, f.message) for f in proj.lint().findings]
    assert [r for r, _ in found] == ["evaluator-init-mismatch"] and "requires model_config" in found[0][1]
    # parity.* is a gate source only on a flow with a parity block
    proj2 = project()
    add_flow("gate:\n  parity.agreement: {min: 0.9}")(proj2)
    assert [f.rule for f in proj2.lint().findings] == ["gate-unknown-evaluation"]
    proj3 = project()
    add_flow("parity: {of: classify, outputs: {category: category}}\ngate:\n  parity.agreement: {min: 0.9}")(proj3)
    assert proj3.lint().findings == []


@needs_mlflow
def test_project_scorer_must_be_decorated(project: Callable[..., Project]) -> None:
    proj = project()
    proj.write("my_scorers.py", MY_SCORERS.format(decorator="# not decorated"))
    add_evaluation(SCORER)(proj)
    found = [(f.rule, f.message) for f in proj.lint().findings]
    assert [r for r, _ in found] == ["evaluator-unresolvable"] and "decorate it with @scorer" in found[0][1]
    proj.write("my_scorers.py", MY_SCORERS.format(decorator="@scorer"))
    assert proj.lint().findings == []
    # a scorer is called with MLflow's parameters: the function's own are what column_mapping may give
    proj.replace(CFG, "    outputs: ${run.outputs.category}", "    inputs: ${data.text}")
    found = [(f.rule, f.message) for f in proj.lint().findings]
    assert {r for r, _ in found} == {"evaluator-param-unknown"}
    assert any("maps 'inputs'" in m for _, m in found) and any("needs outputs" in m for _, m in found)


def test_config_needs_one_of_path_evaluator_scorer(project: Callable[..., Project]) -> None:
    proj = project()
    add_evaluation("f1:\n  column_mapping:\n    response: ${run.outputs.category}\n")(proj)
    found = [(f.rule, f.message) for f in proj.lint().findings]
    assert found and found[0][0] == "missing-key" and "'evaluator:'" in found[0][1]
    proj = project()
    add_evaluation("f1:\n  evaluator: azure.ai.evaluation.F1ScoreEvaluator\n")(proj)
    assert [f.rule for f in proj.lint().findings] == ["wrong-type"]
    assert "write module:Class" in proj.lint().findings[0].message
    proj = project()
    add_evaluation("f1:\n  path: flows/eval\n  scorer: a:b\n")(proj)
    assert "use either 'path' or 'scorer'" in proj.lint().findings[0].message


# --- the static lookup ----------------------------------------------------------------------------------------------

@needs_evaluation
def test_locate_follows_reexports_and_overloads() -> None:
    found = locate("azure.ai.evaluation:SimilarityEvaluator")
    assert isinstance(found, Located) and found.kind == "class"
    assert found.file.name == "_similarity.py"
    assert found.call_params == {"query": True, "response": True, "ground_truth": True} and not found.call_open
    assert found.init_params is not None and found.init_params["model_config"] is True and found.init_open
    f1 = locate("azure.ai.evaluation:F1ScoreEvaluator")
    assert isinstance(f1, Located) and f1.init_params == {"threshold": False} and not f1.init_open
    # two overloads, (query, context) or (conversation): no parameter is required by both
    retrieval = locate("azure.ai.evaluation:RetrievalEvaluator")
    assert isinstance(retrieval, Located)
    assert retrieval.call_params == {"query": False, "context": False, "conversation": False}


@needs_mlflow
def test_locate_reads_lazy_modules_type_checking_imports() -> None:
    found = locate("mlflow.genai.scorers:RegexMatch")  # mlflow.genai.scorers exports it through __getattr__
    assert isinstance(found, Located) and found.file.name == "builtin_scorers.py"
    assert "not installed" in str(locate("no_such_package_xyz:Thing"))


def test_locate_project_module(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from .impl import Judge as Exported\n")
    (tmp_path / "pkg" / "impl.py").write_text(textwrap.dedent("""\
        class Judge:
            def __init__(self, strict: bool, *, limit=3):
                pass

            def __call__(self, *, response, ground_truth=None):
                return {"ok": response == ground_truth}
        """))
    found = locate("pkg:Exported", (tmp_path,))
    assert isinstance(found, Located)
    assert found.init_params == {"strict": True, "limit": False}
    assert found.call_params == {"response": True, "ground_truth": False}


def test_lint_imports_no_evaluator_library(project: Callable[..., Project], tmp_path: Path) -> None:
    proj = project()
    add_evaluation(F1.format(name="F1ScoreEvaluator", param="response"))(proj)
    add_evaluation(SCORER.replace("my_scorers:same_label", "mlflow.genai.scorers:RegexMatch"))(proj)
    code = ("import sys\nfrom llmops_ci.cli import main\nmain(['lint'])\n"
            "heavy = sorted(m for m in sys.modules if m.startswith(('azure.ai', 'mlflow', 'promptflow', 'pandas')))\n"
            "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=proj.root, capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


@needs_mlflow
def test_changed_since_follows_a_project_scorer_and_the_parity_flow(project: Callable[..., Project]) -> None:
    from llmops_ci.project.changes import flow_dependencies
    from llmops_ci.project.loaded import load_project

    proj = project()
    proj.write("my_scorers.py", MY_SCORERS.format(decorator="@scorer"))
    add_evaluation(SCORER)(proj)
    add_evaluation(F1.format(name="F1ScoreEvaluator", param="response"))(proj)
    add_flow("parity: {of: classify, outputs: {category: category}}")(proj)
    loaded = load_project(proj.path(CFG))
    deps = flow_dependencies(loaded, loaded.config.flows["classify"])
    mine = [label for path, label in deps if path.name == "my_scorers.py"]
    assert mine == ["evaluation same"]
    assert not any(path == proj.root.resolve() for path, _ in deps)  # not the whole project folder
    assert any(label == "parity flow classify" for _, label in flow_dependencies(loaded, loaded.config.flows[
        "classify2"]))


@needs_evaluation
@pytest.mark.parametrize(("method", "block", "says"), [
    ("accuracy", "", "'accuracy' is an evaluation flow"),
    ("f1", JUDGE.replace("      ground_truth: ${data.label}\n", "").replace("F1ScoreEvaluator",
                                                                              "RetrievalEvaluator"), "takes no"),
    ("f1", JUDGE.replace("${run.outputs.category}", "${data.text}"), "maps no ${run.outputs"),
])
def test_parity_judge_must_fit(method: str, block: str, says: str, project: Callable[..., Project]) -> None:
    proj = project()
    add_flow(f"parity: {{of: classify, outputs: {{category: category}}, method: {method}}}\n" + block,
             evaluation=not block)(proj)
    found = [(f.rule, f.message) for f in proj.lint().findings if f.rule == "parity-method-unknown"]
    assert found and says in found[0][1], found
