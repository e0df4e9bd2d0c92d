"""Every lint rule: one change to the valid base project that breaks it, one near miss that must not.

The base project (conftest.BASE_PROJECT) lints with no findings at all; each case edits it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmops_ci.diagnostics.findings import RULES
from tests.helpers.projects import Project

DAG = "flows/classify/flow.dag.yaml"
EVAL = "flows/eval/flow.dag.yaml"
CFG = "llmops.yaml"
PROMPT = "flows/classify/classify.jinja2"
CLEAN_PY = "flows/classify/clean.py"

Edit = Callable[[Project], None]


def replace(rel: str, old: str, new: str) -> Edit:
    return lambda p: p.replace(rel, old, new)


def write(rel: str, text: str) -> Edit:
    return lambda p: p.write(rel, text)


def both(*edits: Edit) -> Edit:
    def run(p: Project) -> None:
        for e in edits:
            e(p)
    return run


def nothing(p: Project) -> None:
    return None


@dataclass
class Case:
    bad: Edit
    good: Edit
    where: str  # file the finding must point at
    line: int | None = None
    says: str = ""  # a fragment the message must contain


LANG = "    text: ${inputs.text}\n    lang: en\n"
UNUSED_NODE = """\
- name: extra
  type: python
  source:
    type: code
    path: clean.py
  inputs:
    text: ${inputs.text}
"""

NO_CONNECTION = replace(DAG, "          connection: openai\n          api: chat\n          inputs:\n"
                        "            deployment_name: gpt-4o-mini\n            temperature",
                        "          api: chat\n          inputs:\n"
                        "            deployment_name: gpt-4o-mini\n            temperature")
# a per-line score the gate can use: grade() returns a bool
SCORED = both(replace(CFG, "        path: flows/eval\n",
                      "        path: flows/eval\n        scores: {accuracy: grade}\n"),
              replace("flows/eval/grade.py", ") -> str:", ") -> bool:"))

CASES: dict[str, Case] = {
    "yaml-syntax": Case(replace(DAG, "  text:\n    type: string", "  text: [string\n"),
                        replace(DAG, "  inputs:\n    text: ${inputs.text}", '  inputs: {text: "${inputs.text}"}'),
                        DAG, 4),
    "yaml-duplicate-key": Case(replace(CFG, "    data: data/classify.jsonl\n",
                                       "    data: data/classify.jsonl\n    data: data/other.jsonl\n"),
                               nothing, CFG, 11, "duplicate key 'data'"),
    "unknown-key": Case(replace(DAG, "    raw: ${classify.output}\n",
                                "    raw: ${classify.output}\n  activte:\n    when: ${clean.output}\n    is: x\n"),
                        replace(DAG, "    raw: ${classify.output}\n",
                                "    raw: ${classify.output}\n  activate:\n    when: ${clean.output}\n    is: x\n"),
                        DAG, 28, "did you mean 'activate'"),
    "wrong-type": Case(replace(CFG, "    path: flows/classify\n",
                               "    path: flows/classify\n    max_failed_lines: x\n"),
                       replace(CFG, "    path: flows/classify\n",
                               "    path: flows/classify\n    max_failed_lines: 2\n"),
                       CFG, 10, "max_failed_lines"),
    "missing-key": Case(replace(DAG, "- name: clean\n  type: python\n", "- name: clean\n"), nothing, DAG, 12,
                        "has no 'type'"),
    "path-missing": Case(replace(CFG, "path: flows/classify", "path: flows/classifyy"),
                         replace(CFG, "path: flows/classify", "path: ./flows/classify"), CFG, 9),
    "path-outside": Case(replace(CFG, "data: data/classify.jsonl", "data: ../../etc/passwd"),
                         replace(CFG, "data: data/classify.jsonl", "data: flows/../data/classify.jsonl"), CFG, 10),
    "env-syntax": Case(replace(CFG, "${env:OPENAI_API_KEY}", "${env:OPENAI API KEY}"),
                       replace(CFG, "${env:OPENAI_API_KEY}", "prefix-${env:OPENAI_API_KEY}"), CFG, 6),
    "ci-token-ref": Case(replace(CFG, "${env:OPENAI_API_KEY}", "${env:GITHUB_TOKEN}"),
                         replace(CFG, "${env:OPENAI_API_KEY}", "${env:GITHUB_MODELS_KEY}"), CFG, 6,
                         "credential of the CI system"),
    "link-loop": Case(lambda p: p.path("flows/classify/loop").symlink_to("."),
                      lambda p: p.path("flows/classify/grade.py").symlink_to("../eval/grade.py"),
                      "flows/classify/loop", None, "loop"),
    "secret-literal": Case(replace(CFG, "${env:OPENAI_API_KEY}", "sk-proj-abcdefghijklmnopqrstuvwx0123456789"),
                           replace(CFG, "base_url: ${env:OPENAI_BASE_URL}",
                                   "base_url: https://api.openai.com/v1\n    organization: org-1234"),
                           CFG, 6, "'api_key'"),
    "input-type": Case(replace(DAG, "    type: list\n", "    type: lisst\n"), nothing, DAG, 5, "did you mean 'list'"),
    "input-unused": Case(replace(DAG, "inputs:\n  text:\n", "inputs:\n  spare:\n    type: string\n    default: x\n"
                                 "  text:\n"), nothing, DAG, 2, "'spare'"),
    "output-ref-unknown": Case(replace(DAG, "${parse.output.category}", "${parsed.output.category}"),
                               replace(DAG, "${parse.output.category}", "${ parse.output.category }"),
                               DAG, 10, "did you mean 'parse'"),
    "output-ref-aggregation": Case(replace(EVAL, "    reference: ${grade.output}\n",
                                           "    reference: ${grade.output}\n  acc:\n    type: double\n"
                                           "    reference: ${accuracy.output}\n"),
                                   nothing, EVAL, 12),
    "node-ref-unknown": Case(replace(DAG, "raw: ${classify.output}", "raw: ${clasify.output}"),
                             replace(DAG, "raw: ${classify.output}", "raw: ${classify.output.text}"),
                             DAG, 27, "did you mean 'classify'"),
    "node-ref-aggregation": Case(replace(EVAL, "    grades: ${grade.output}\n  aggregation: true\n",
                                         "    grades: ${grade.output}\n  aggregation: true\n- name: report\n"
                                         "  type: python\n  source:\n    type: code\n    path: grade.py\n  inputs:\n"
                                         "    groundtruth: ${accuracy.output}\n    prediction: x\n"),
                                 replace(EVAL, "    grades: ${grade.output}\n  aggregation: true\n",
                                         "    grades: ${grade.output}\n  aggregation: true\n- name: report\n"
                                         "  type: python\n  source:\n    type: code\n    path: accuracy.py\n"
                                         "  inputs:\n    grades: ${accuracy.output}\n  aggregation: true\n"),
                                 EVAL, 33, "aggregation node 'accuracy'"),
    "node-cycle": Case(replace(DAG, "text: ${inputs.text}", "text: ${parse.output}"), nothing, DAG, None,
                       "clean -> classify -> parse -> clean"),
    "node-duplicate": Case(replace(DAG, "- name: parse", "- name: clean"), nothing, DAG, 21, "already used"),
    "node-type-unknown": Case(replace(DAG, "- name: clean\n  type: python", "- name: clean\n  type: pyhton"),
                              nothing, DAG, 13, "did you mean 'python'"),
    "node-unused": Case(replace(DAG, "node_variants:\n", UNUSED_NODE + "node_variants:\n"), nothing, DAG, 28),
    "tool-file-missing": Case(replace(DAG, "path: clean.py", "path: clean2.py"), nothing, DAG, 16),
    "tool-syntax": Case(write(CLEAN_PY, "from promptflow.core import tool\n\n@tool\ndef clean(text:\n"), nothing,
                        CLEAN_PY, 4),
    "tool-function": Case(replace(CLEAN_PY, "@tool\n", ""),
                          replace(CLEAN_PY, "@tool\n", "@tool()\n"), CLEAN_PY, None, "no function decorated"),
    "tool-arg-unknown": Case(replace(DAG, "    text: ${inputs.text}\n", LANG),
                             both(replace(DAG, "    text: ${inputs.text}\n", LANG),
                                  replace(CLEAN_PY, "limit: int = 2000)", "limit: int = 2000, **kwargs)")),
                             DAG, 19, "'lang'"),
    "tool-arg-missing": Case(replace(CLEAN_PY, "limit: int = 2000)", "limit: int = 2000, *, mode: str)"),
                             replace(CLEAN_PY, "limit: int = 2000)", "limit: int = 2000, *, mode: str = 'x')"),
                             DAG, 18, "'mode'"),
    "package-tool-unchecked": Case(replace(DAG, "  source:\n    type: code\n    path: parse.py\n",
                                           "  source:\n    type: package\n    tool: no_such_pkg.tools.parse.run\n"),
                                   replace(DAG, "  source:\n    type: code\n    path: parse.py\n",
                                           "  source:\n    type: package\n    tool: json.decoder.scanstring\n"),
                                   DAG, 25, "not checked"),
    "prompt-syntax": Case(replace(PROMPT, "{% for turn in history %}", "{% for turn in %}"), nothing, PROMPT, 3),
    "prompt-var-unbound": Case(replace(PROMPT, "{{ label }}: {{ text }}", "{{ label }}: {{ text }} {{ examples }}"),
                               replace(PROMPT, "{{ label }}: {{ text }}", "{{ label }}: {{ text }} {{ range(2) }}"),
                               PROMPT, 11, "'examples'"),
    "prompt-input-unused": Case(replace(DAG, "temperature: 0.2\n", "temperature: 0.2\n            tone: calm\n"),
                                nothing, DAG, 55, "'tone'"),
    # the near miss: the config's `connections:` override gives the node its connection
    "llm-connection-missing": Case(both(NO_CONNECTION, replace(CFG, "{connection: openai, model: gpt-4o-mini}",
                                                               "{model: gpt-4o-mini}")),
                                   NO_CONNECTION, DAG, 45, "without 'connection'"),
    "llm-provider-unknown": Case(replace(DAG, "          connection: openai\n", "          connection: openai\n"
                                         "          provider: AzureOpenAi\n"),
                                 replace(DAG, "          connection: openai\n", "          connection: openai\n"
                                         "          provider: AzureOpenAI\n"), DAG, 39, "did you mean 'AzureOpenAI'"),
    "activate-ref-line-node": Case(replace(EVAL, "  aggregation: true\n", "  aggregation: true\n  activate:\n"
                                           "    when: ${grade.output}\n    is: Correct\n"),
                                   replace(EVAL, "  aggregation: true\n", "  aggregation: true\n  activate:\n"
                                           "    when: ${inputs.groundtruth}\n    is: Correct\n"), EVAL, 28,
                                   "cannot reference 'grade'"),
    "input-default-shadowed": Case(lambda p: p.write("data/classify.jsonl", p.read("data/classify.jsonl").replace(
                                       '{"text"', '{"history": [], "text"')),
                                   both(lambda p: p.write("data/classify.jsonl", p.read("data/classify.jsonl").replace(
                                       '{"text"', '{"history": [], "text"')),
                                       replace(CFG, "      text: ${data.text}\n",
                                               "      text: ${data.text}\n      history: ${data.history}\n")),
                                   CFG, 11, "flow input 'history' has a default"),
    "env-connection-unknown": Case(replace(CFG, "    path: flows/classify\n", "    path: flows/classify\n"
                                           "    environment_variables:\n      KEY: ${openai.api_kye}\n"),
                                   replace(CFG, "    path: flows/classify\n", "    path: flows/classify\n"
                                           "    environment_variables:\n      KEY: ${openai.api_key}\n"),
                                   CFG, 11, "did you mean 'api_key'"),
    "score-output-type": Case(replace(CFG, "        path: flows/eval\n", "        path: flows/eval\n"
                                      "        scores: {accuracy: grade}\n"), SCORED, CFG, 19, "is a string"),
    "llm-model-missing": Case(replace(CFG, "{connection: openai, model: gpt-4o-mini}", "{connection: openai}"),
                              both(replace(CFG, "{connection: openai, model: gpt-4o-mini}", "{connection: openai}"),
                                   lambda p: p.write(DAG, p.read(DAG).replace("deployment_name:", "model:"))),
                              CFG, 15, "sets no 'model'"),
    "llm-api-invalid": Case(replace(DAG, "api: chat", "api: chat2"),
                            replace(DAG, "api: chat", "api: completion"), DAG, 39, "'chat' or 'completion'"),
    "connection-undeclared": Case(replace(CFG, "{connection: openai,", "{connection: azure,"), nothing, CFG, 15,
                                  "'azure' is not declared"),
    "node-override-unknown": Case(replace(CFG, "      classify: {connection", "      classifier: {connection"),
                                  nothing, CFG, 15, "did you mean 'classify'"),
    "variant-default-unknown": Case(replace(DAG, "default_variant_id: variant_0", "default_variant_id: variant_9"),
                                    replace(DAG, "default_variant_id: variant_0", "default_variant_id: variant_1"),
                                    DAG, 30),
    # a node that declares use_variants with no node_variants entry
    "variant-mismatch": Case(replace(DAG, "- name: parse\n", "- name: parse\n  use_variants: true\n"),
                             nothing, DAG, 22, "no entry 'parse'"),
    "variant-unknown": Case(replace(CFG, "${classify.variant_0}", "${classify.variant_7}"),
                            replace(CFG, "${classify.variant_0}", "${classify.variant_1}"), CFG, 13,
                            "no variant 'variant_7'"),
    "include-missing": Case(replace(DAG, "inputs:\n  text:", "additional_includes:\n- ../shared/missing.py\n"
                                    "inputs:\n  text:"),
                            both(write("flows/shared/common.py", "X = 1\n"),
                                 replace(DAG, "inputs:\n  text:", "additional_includes:\n- ../shared/common.py\n"
                                         "inputs:\n  text:")), DAG, 2),
    "requirements-missing": Case(replace(DAG, "inputs:\n  text:", "environment:\n  python_requirements_txt: req.txt\n"
                                         "inputs:\n  text:"),
                                 both(write("flows/classify/req.txt", "promptflow-tools\n"),
                                      replace(DAG, "inputs:\n  text:", "environment:\n  python_requirements_txt: "
                                              "req.txt\ninputs:\n  text:")), DAG, 2),
    "data-missing": Case(replace(CFG, "data/classify.jsonl", "data/missing.jsonl"), nothing, CFG, 10),
    # the near miss: every line numbered once (upstream's evaluation data counts from 1): nothing is merged
    "data-line-number": Case(write("data/classify.jsonl", '{"line_number": 1, "text": "a", "label": "App"}\n'
                                   '{"line_number": 1, "text": "b", "label": "Movie"}\n'
                                   '{"line_number": 2, "text": "c", "label": "None"}\n'),
                             write("data/classify.jsonl", '{"line_number": 1, "text": "a", "label": "App"}\n'
                                   '{"line_number": 2, "text": "b", "label": "Movie"}\n'
                                   '{"line_number": 3, "text": "c", "label": "None"}\n'),
                             "data/classify.jsonl", 2, "line 2 has line_number 1, which a line before it has too"),
    "data-parse": Case(replace("data/classify.jsonl", '{"text": "Watch', '{"text": Watch'), nothing,
                       "data/classify.jsonl", 2, "line 2"),
    "mapping-invalid": Case(replace(CFG, "text: ${data.text}", "text: ${inputs.text}"),
                            replace(CFG, "text: ${data.text}", "text: a literal value"), CFG, 12),
    "mapping-column-unknown": Case(replace(CFG, "text: ${data.text}", "text: ${data.txt}"), nothing, CFG, 12,
                                   "did you mean 'text'"),
    "mapping-input-unknown": Case(replace(CFG, "text: ${data.text}", "txt: ${data.text}"), nothing, CFG, 12,
                                  "did you mean 'text'"),
    # the near miss: as many lines as the flow's data (prompt flow pairs them line by line)
    "evaluation-data-misaligned": Case(
        both(write("data/labels.jsonl", '{"label": "App"}\n{"label": "Movie"}\n'),
             replace(CFG, "        path: flows/eval\n", "        path: flows/eval\n        data: data/labels.jsonl\n")),
        both(write("data/labels.jsonl", '{"label": "App"}\n{"label": "Movie"}\n{"label": "None"}\n'),
             replace(CFG, "        path: flows/eval\n", "        path: flows/eval\n        data: data/labels.jsonl\n")),
        CFG, 19, "has 2 line(s) and the flow's data 'data/classify.jsonl' 3"),
    "mapping-output-unknown": Case(replace(CFG, "${run.outputs.category}", "${run.outputs.categry}"),
                                   replace(CFG, "${run.outputs.category}", "${run.inputs.text}"), CFG, 21,
                                   "did you mean 'category'"),
    "input-unmapped": Case(both(replace(CFG, "    column_mapping:\n      text: ${data.text}\n", ""),
                                lambda p: p.write("data/classify.jsonl",
                                                  p.read("data/classify.jsonl").replace('"text"', '"body"'))),
                           replace(CFG, "    column_mapping:\n      text: ${data.text}\n", ""), CFG, None,
                           "flow input 'text'"),
    "gate-unknown-evaluation": Case(replace(CFG, "accuracy.accuracy:", "acuracy.accuracy:"), nothing, CFG, 23,
                                    "did you mean 'accuracy'"),
    "score-output-unknown": Case(replace(CFG, "        path: flows/eval\n", "        path: flows/eval\n"
                                         "        scores: {accuracy: grades}\n"),
                                 SCORED, CFG, 19, "did you mean 'grade'"),
    "gate-rule-empty": Case(replace(CFG, "{min: 0.8, max_drop: 0.05}", "{significant: true}"),
                            replace(CFG, "{min: 0.8, max_drop: 0.05}", "{max_drop: 0.05}"),
                            CFG, 23),
    "deploy-env-connection-unused": Case(
        both(replace(CFG, "flows:\n", "  other: {type: open_ai, api_key: '${env:OTHER_KEY}'}\nflows:\n"),
             replace(CFG, "    path: flows/classify\n", "    path: flows/classify\n    deploy:\n      endpoint: ep\n"
                     "      environment_variables:\n        KEY: ${other.api_key}\n")),
        replace(CFG, "    path: flows/classify\n", "    path: flows/classify\n    deploy:\n      endpoint: ep\n"
                "      environment_variables:\n        KEY: ${openai.api_key}\n"),
        CFG, 14, "no node of flow 'classify' uses"),
    "run-field-ignored": Case(
        both(write("runs/classify.run.yml", "flow: ../flows/classify\ndata: ../data/classify.jsonl\nname: mine\n"
                   "column_mapping: {text: '${data.text}'}\nconnections: {classify: {connection: openai, model: m}}\n"),
             replace(CFG, "      run.latency_p95: {max: 4.0}\n", "      run.latency_p95: {max: 4.0}\n  from-file:\n"
                     "    run_file: runs/classify.run.yml\n")),
        both(write("runs/classify.run.yml", "flow: ../flows/classify\ndata: ../data/classify.jsonl\n"
                   "column_mapping: {text: '${data.text}'}\nconnections: {classify: {connection: openai, model: m}}\n"),
             replace(CFG, "      run.latency_p95: {max: 4.0}\n", "      run.latency_p95: {max: 4.0}\n  from-file:\n"
                     "    run_file: runs/classify.run.yml\n")),
        "runs/classify.run.yml", 3, "every CI run gets a name of its own"),
    # 3 data lines can never show a significance-tested drop; 60 lines can show one of 0.1 (6 lines, McNemar)
    "gate-underpowered": Case(replace(CFG, "{min: 0.8, max_drop: 0.05}", "{max_drop: 0.1, significant: true}"),
                              both(replace(CFG, "{min: 0.8, max_drop: 0.05}", "{max_drop: 0.1, significant: true}"),
                                   write("data/classify.jsonl", '{"text": "Watch the trailer", "label": "Movie"}\n'
                                         * 60)),
                              CFG, 23, "3 data lines"),
    "flow-kind-unknown": Case(lambda p: p.path(DAG).rename(p.path("flows/classify/flow.yaml")), nothing,
                              "flows/classify"),
}


# Rules of the flex, prompty, mlflow_agent and agent_framework kinds have their breaking cases and near misses
# beside those kinds' tests.
KIND_TESTS = {"flex": "tests/kinds/test_flex.py", "prompty": "tests/kinds/test_prompty.py",
              "mlflow_agent": "tests/kinds/test_mlflow_agent.py",
              "agent_framework": "tests/kinds/test_agent_framework.py"}


def test_every_rule_has_a_case() -> None:
    from llmops_ci.kinds import KINDS
    from llmops_ci.lint.evaluators import RULES as EVALUATOR_RULES  # their cases: tests/project/test_evaluators.py

    elsewhere = {rule.id: name for name in KIND_TESTS for rule in KINDS[name].rules()}
    assert set(CASES) == set(RULES) - set(elsewhere) - set(EVALUATOR_RULES)
    root = Path(__file__).resolve().parents[2]
    for rule_id, name in elsewhere.items():
        assert f'"{rule_id}"' in (root / KIND_TESTS[name]).read_text(encoding="utf-8"), f"{rule_id} has no case"


def test_base_project_is_clean(project: Callable[..., Project]) -> None:
    assert project().lint().findings == []


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires(rule: str, project: Callable[..., Project]) -> None:
    case = CASES[rule]
    proj = project()
    case.bad(proj)
    report = proj.lint()
    hits = [f for f in report.findings if f.rule == rule]
    assert hits, f"{rule} did not fire; got {[(f.rule, f.message) for f in report.findings]}"
    hit = hits[0]
    assert hit.path == case.where
    assert hit.severity == RULES[rule].severity
    if case.line is not None:
        assert hit.line == case.line, hit
    assert case.says in hit.message


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_near_miss_is_clean(rule: str, project: Callable[..., Project]) -> None:
    proj = project()
    CASES[rule].good(proj)
    findings = proj.lint().findings
    assert findings == [], [(f.rule, f.path, f.line, f.message) for f in findings]


@pytest.mark.parametrize(("value", "meant"), [
    ('"${data.text"', "${data.text}"), ('" ${data.text} "', "${data.text}"), ('"$ {data.text}"', "${data.text}"),
    ('"Text: ${data.text} please"', None), ('"${data.text}"', None), ("a literal value", None),
])
def test_a_reference_prompt_flow_would_take_as_text_is_an_error(value: str, meant: str | None,
                                                                 project: Callable[..., Project]) -> None:
    """prompt flow maps only ``${source.name}`` with nothing around it; an unclosed or padded one reaches every line
    as that very text, and the run goes on with it."""
    proj = project()
    replace(CFG, "text: ${data.text}", f"text: {value}")(proj)
    found = [f for f in proj.lint().findings if f.rule == "mapping-invalid"]
    if meant is None:
        assert found == [], [(f.rule, f.message) for f in found]
    else:
        assert len(found) == 1 and f"did you mean '{meant}'" in found[0].message, found
        assert found[0].path == CFG and found[0].line == 12


@pytest.mark.parametrize(("node", "key", "ok"), [
    ("classify", "deploymnet_name", False),
    ("classify", "model", True),
    ("clean", "connection", False),   # a python node without connection arguments
    ("clean", "deployment_name", True),
])
def test_connection_override_keys(node: str, key: str, ok: bool, project: Callable[..., Project]) -> None:
    proj = project()
    proj.replace(CFG, "      classify: {connection: openai, model: gpt-4o-mini}",
                 f"      classify: {{connection: openai}}\n      {node}: {{{key}: x}}"
                 if node != "classify" else f"      classify: {{connection: openai, {key}: x}}")
    hits = [f for f in proj.lint().findings if f.rule == "node-override-unknown"]
    assert not hits if ok else hits and f"cannot override '{key}'" in hits[0].message, hits


def test_model_rule_is_for_llm_nodes_only(project: Callable[..., Project]) -> None:
    # upstream flows pass a connection to their own Python tools (and set deployment_name themselves or not at all)
    proj = project()
    proj.write(CLEAN_PY, "from promptflow.connections import AzureOpenAIConnection\n"
                         "from promptflow.core import tool\n\n\n@tool\n"
                         "def clean(text: str, connection: AzureOpenAIConnection, limit: int = 2000) -> str:\n"
                         "    return text\n")
    proj.replace(DAG, "    text: ${inputs.text}\n", "    text: ${inputs.text}\n    connection: aoai\n")
    proj.replace(CFG, "connections:\n", "connections:\n  aoai:\n    type: azure_open_ai\n"
                                        "    api_base: ${env:AZURE_OPENAI_ENDPOINT}\n"
                                        "    api_key: ${env:AZURE_OPENAI_API_KEY}\n")
    assert proj.lint().findings == []


def test_a_connection_type_typo_is_one_finding_not_also_undeclared(project: Callable[..., Project]) -> None:
    proj = project()
    proj.replace(CFG, "    type: open_ai\n", "    type: openai\n")
    findings = proj.lint().findings
    assert [f.rule for f in findings] == ["wrong-type"], findings
    assert "did you mean 'open_ai'" in findings[0].message


def test_a_dotenv_file_in_a_run_yml_is_said_to_be_ignored(project: Callable[..., Project]) -> None:
    proj = project()
    proj.write("runs/classify.run.yml", "flow: ../flows/classify\ndata: ../data/classify.jsonl\n"
               "environment_variables: .env\ncolumn_mapping: {text: '${data.text}'}\n"
               "connections: {classify: {connection: openai, model: m}}\n")
    proj.replace(CFG, "      run.latency_p95: {max: 4.0}\n",
                 "      run.latency_p95: {max: 4.0}\n  from-file:\n    run_file: runs/classify.run.yml\n")
    (hit,) = [f for f in proj.lint().findings if f.rule == "run-field-ignored"]
    assert (hit.path, hit.line, hit.severity) == ("runs/classify.run.yml", 3, "warning")
    assert "a .env file is not read" in hit.message
