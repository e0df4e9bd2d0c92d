"""Config values that used to pass lint and crash (or misbehave) later: each is a located lint error now."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmops_ci.config import read_config
from llmops_ci.kinds.dag.python_tool import ToolFileError, read_tool
from tests.conftest import CliResult, Project

DEPLOY = "    register:\n      name: classify-model\n    deploy:\n      endpoint: classify-ep\n"


@dataclass(frozen=True)
class Bad:
    file: str
    old: str
    new: str
    says: str
    rule: str = "wrong-type"


CASES: dict[str, Bad] = {
    "traffic-int": Bad("llmops.yaml", "endpoint: classify-ep\n", "endpoint: classify-ep\n      traffic: 50\n",
                       "'traffic' must be a list"),
    "traffic-text": Bad("llmops.yaml", "endpoint: classify-ep\n", "endpoint: classify-ep\n      traffic: abc\n",
                        "'traffic' must be a list"),
    "traffic-empty": Bad("llmops.yaml", "endpoint: classify-ep\n", "endpoint: classify-ep\n      traffic: []\n",
                         "traffic must be rising percentages"),
    "traffic-items": Bad("llmops.yaml", "endpoint: classify-ep\n", "endpoint: classify-ep\n      traffic: [x]\n",
                         "must be a whole number"),
    "endpoint-slash": Bad("llmops.yaml", "endpoint: classify-ep", "endpoint: a/b", "an endpoint name starts with"),
    "endpoint-dots": Bad("llmops.yaml", "endpoint: classify-ep", "endpoint: ../../x", "an endpoint name"),
    "instances-zero": Bad("llmops.yaml", "endpoint: classify-ep\n", "endpoint: classify-ep\n      instance_count: 0\n",
                          "instance_count must be 1 or more"),
    "register-escape": Bad("llmops.yaml", "name: classify-model", "name: ../../x", "a model name is"),
    "register-slash": Bad("llmops.yaml", "name: classify-model", "name: a/b", "a model name is"),
    "path-empty": Bad("llmops.yaml", "path: flows/classify", 'path: ""', "'path' is empty"),
    "path-blank": Bad("llmops.yaml", "path: flows/classify", 'path: "  "', "'path' is empty"),
    "path-too-long": Bad("llmops.yaml", "path: flows/classify", "path: flows/" + "x" * 300, "'path' is too long"),
    "path-nul": Bad("llmops.yaml", "path: flows/classify", 'path: "flows/\\0x"', "'path' holds a NUL character"),
    "tool-path-too-long": Bad("flows/classify/flow.dag.yaml", "path: clean.py", "path: " + "c" * 300 + ".py",
                              "does not exist", "tool-file-missing"),
    "include-too-long": Bad("flows/classify/flow.dag.yaml", "nodes:\n", "additional_includes: [" + "i" * 300
                            + "]\nnodes:\n", "does not exist", "include-missing"),
    "include-outside": Bad("flows/classify/flow.dag.yaml", "nodes:\n", "additional_includes: [../../..]\nnodes:\n",
                           "leads out of the project folder", "path-outside"),
    "eval-path-empty": Bad("llmops.yaml", "path: flows/eval", 'path: ""', "'path' is empty"),
    "data-empty": Bad("llmops.yaml", "data: data/classify.jsonl", 'data: ""', "'data' is empty"),
    "data-outside": Bad("llmops.yaml", "data: data/classify.jsonl", "data: ../outside.jsonl",
                        "leads out of the project folder", "path-outside"),
    "data-absolute": Bad("llmops.yaml", "data: data/classify.jsonl", "data: /etc/passwd",
                         "leads out of the project folder", "path-outside"),
    "flow-outside": Bad("llmops.yaml", "path: flows/classify", "path: ../elsewhere",
                        "leads out of the project folder", "path-outside"),
    "eval-outside": Bad("llmops.yaml", "path: flows/eval", "path: ../../eval",
                        "leads out of the project folder", "path-outside"),
    "smoke-outside": Bad("llmops.yaml", "endpoint: classify-ep\n",
                         "endpoint: classify-ep\n      smoke_tests: ../../etc/*.json\n",
                         "leads out of the project folder", "path-outside"),
    "cache-outside": Bad("llmops.yaml", "flows:\n", "llm_cache: {mode: auto, dir: ../cassettes}\nflows:\n",
                         "leads out of the project folder", "path-outside"),
    "cache-is-a-file": Bad("llmops.yaml", "flows:\n", "llm_cache: {mode: auto, dir: data/classify.jsonl}\nflows:\n",
                           "is a file; it must be a folder"),
    "gate-nan": Bad("llmops.yaml", "{min: 0.8, max_drop: 0.05}", "{min: .nan, max_drop: 0.05}",
                    "must be a finite number"),
    "gate-inf": Bad("llmops.yaml", "{min: 0.8, max_drop: 0.05}", "{min: 0.8, max_drop: .inf}",
                    "must be a finite number"),
    "data-ref-empty": Bad("llmops.yaml", "text: ${data.text}", "text: ${data.}", "name the column",
                          "mapping-invalid"),
    "activate-mapping": Bad("flows/classify/flow.dag.yaml", "  inputs:\n    raw: ${classify.output}\n",
                            "  inputs:\n    raw: ${classify.output}\n  activate: {when: {a: 1}, is: true}\n",
                            "'when' must be a string"),
    "activate-literal": Bad("flows/classify/flow.dag.yaml", "  inputs:\n    raw: ${classify.output}\n",
                            "  inputs:\n    raw: ${classify.output}\n  activate: {when: yes-please, is: true}\n",
                            "write ${<node>.output}"),
    "positional-only": Bad("flows/classify/clean.py", "def clean(text: str,", "def clean(text: str, /,",
                           "positional-only", "tool-function"),
}


def _with_deploy(proj: Project) -> None:
    proj.replace("llmops.yaml", "    gate:\n", DEPLOY + "    gate:\n")


@pytest.mark.parametrize("case", sorted(CASES))
def test_lint_names_the_problem_and_line(case: str, project: Callable[..., Project],
                                         cli: Callable[..., CliResult]) -> None:
    bad = CASES[case]
    proj = project()
    _with_deploy(proj)
    assert proj.lint().findings == []
    proj.replace(bad.file, bad.old, bad.new)
    hits = [f for f in proj.lint().findings if bad.says in f.message]
    assert hits, [(f.rule, f.message) for f in proj.lint().findings]
    assert hits[0].rule == bad.rule and hits[0].line is not None
    assert hits[0].path.endswith(bad.file)
    result = cli("batch-run", "--config", "llmops.yaml", "--flow", "classify")
    assert result.code == 2, result.err
    assert "Traceback" not in result.err and bad.says in result.err


def test_a_symlink_out_of_the_project_is_outside(project: Callable[..., Project], tmp_path_factory:
                                                 pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "secret.jsonl"
    elsewhere.write_text('{"text": "x", "label": "y"}\n', encoding="utf-8")
    proj = project()
    proj.path("data/link.jsonl").symlink_to(elsewhere)
    proj.replace("llmops.yaml", "data: data/classify.jsonl", "data: data/link.jsonl")
    assert [f.rule for f in proj.lint().findings] == ["path-outside"]


def test_a_definition_file_as_path_means_its_folder(project: Callable[..., Project]) -> None:
    """`path: flows/x/flow.dag.yaml` works like `path: flows/x` in every step (it used to crash batch-run)."""
    proj = project()
    proj.replace("llmops.yaml", "path: flows/classify", "path: flows/classify/flow.dag.yaml")
    proj.replace("llmops.yaml", "path: flows/eval", "path: flows/eval/flow.dag.yaml")
    config, problems = read_config(proj.path("llmops.yaml"), environ=None)
    assert problems == [] and config is not None
    assert config.flows["classify"].path == proj.path("flows/classify")
    assert config.flows["classify"].evaluations["accuracy"].path == proj.path("flows/eval")
    assert proj.lint().findings == []


def test_run_file_paths_stay_inside(project: Callable[..., Project]) -> None:
    proj = project()
    proj.write("runs/c.run.yml", "flow: ../flows/classify/flow.dag.yaml\ndata: ../../../x.jsonl\n")
    proj.replace("llmops.yaml", "  classify:\n", "  viafile:\n    run_file: runs/c.run.yml\n  classify:\n")
    config, problems = read_config(proj.path("llmops.yaml"), environ=None)
    assert config is not None and config.flows["viafile"].path == proj.path("flows/classify")
    assert [(p.path, p.line, p.rule) for p in problems] == [("runs/c.run.yml", 2, "path-outside")]
    proj.replace("llmops.yaml", "run_file: runs/c.run.yml", "run_file: ../c.run.yml")
    _, problems = read_config(proj.path("llmops.yaml"), environ=None)
    assert [p.rule for p in problems] == ["path-outside"]


def test_positional_only_after_self_is_refused(tmp_path: Path) -> None:
    tool = tmp_path / "t.py"
    tool.write_text("class T:\n    @tool\n    def run(self, /, x):\n        return x\n", encoding="utf-8")
    assert read_tool(tool).params.keys() == {"x"}  # only `self` before '/': inputs still go by name
    tool.write_text("class T:\n    @tool\n    def run(self, x, /):\n        return x\n", encoding="utf-8")
    with pytest.raises(ToolFileError) as err:
        read_tool(tool)
    assert err.value.line == 3 and "'x'" in err.value.message


def test_a_fifo_in_the_flow_folder_does_not_block_deploy(project: Callable[..., Project],
                                                          cli: Callable[..., CliResult],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    proj = project()
    _with_deploy(proj)
    os.mkfifo(proj.path("flows/classify/pipe"))
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fifo-" + "f" * 20)
    result = cli("deploy", "--dry-run", "--config", "llmops.yaml")
    assert result.code == 0, result.err


def test_includes_inside_the_project_are_fine(project: Callable[..., Project]) -> None:
    proj = project({"shared/util.py": "X = 1\n"})
    proj.replace("flows/classify/flow.dag.yaml", "nodes:\n", "additional_includes: [../../shared]\nnodes:\n")
    assert proj.lint().findings == []


def test_data_outside_the_project_is_never_read(project: Callable[..., Project],
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    """Its column names would otherwise show up in lint messages (and so in the PR comment)."""
    elsewhere = tmp_path_factory.mktemp("outside") / "private.jsonl"
    elsewhere.write_text('{"CUSTOMER_SSN_COLUMN": 1}\n', encoding="utf-8")
    proj = project()
    proj.replace("llmops.yaml", "data: data/classify.jsonl", f"data: {elsewhere}")
    findings = proj.lint().findings
    assert [f.rule for f in findings] == ["path-outside"]
    assert not any("CUSTOMER_SSN_COLUMN" in f.message for f in findings)
