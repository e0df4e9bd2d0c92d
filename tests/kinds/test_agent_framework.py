"""Lint of Agent Framework flows: every rule has a breaking case and a clean near miss; the framework's own samples
lint with no false error; lint imports no framework."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.kinds import KINDS, kind_for
from llmops_ci.kinds.agent_framework.facts import entry_facts
from tests.helpers.projects import CliResult, Project

SAMPLES = Path(__file__).parent / "data" / "maf_samples"

AGENT = """\
kind: Prompt
name: Classifier
instructions: Classify the page.
model:
  id: gpt-4o-mini
  provider: OpenAI
  apiType: Chat
  options:
    temperature: 0
  connection:
    kind: key
    endpoint: =Env.MY_ENDPOINT
    key: =Env.MY_KEY
"""
WORKFLOW = """\
kind: Workflow
trigger:
  kind: OnConversationStart
  id: demo
  actions:
    - kind: InvokeAzureAgent
      id: ask
      agent:
        name: Classifier
    - kind: SetVariable
      id: count
      variable: Local.Turns
      value: 1
    - kind: ConditionGroup
      id: check
      conditions:
        - condition: true
          id: again
          actions:
            - kind: GotoAction
              id: back
              actionId: ask
"""


def rules_of(tmp_path: Path, text: str, name: str = "agent.yaml", extra: dict[str, str] | None = None
             ) -> list[tuple[str, int | None]]:
    for rel, body in (extra or {}).items():
        (tmp_path / rel).write_text(textwrap.dedent(body), encoding="utf-8")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    kind = kind_for(path)
    assert kind is not None and kind.name == "agent_framework"
    return [(f.rule, f.line) for f in kind.inspect(path).findings]


# (rule, the breaking edit, the clean near miss) as (old, new) replacements of AGENT or WORKFLOW
CASES = [
    ("maf-unknown-key", AGENT, ("instructions:", "instruction:"),
     ("instructions:", "additionalInstructions: x\ninstructions:")),
    ("maf-unknown-key", AGENT, ("temperature: 0", "temprature: 0"), ("temperature: 0", "topP: 0.9")),
    ("maf-provider-unknown", AGENT, ("apiType: Chat", "apiType: Assistants"),
     ("apiType: Chat", "apiType: Responses")),
    ("maf-provider-unknown", AGENT, ("provider: OpenAI", "provider: OpenAl"),
     ("provider: OpenAI", "provider: AzureOpenAI")),
    ("maf-connection-kind", AGENT, ("kind: key", "kind: token"), ("kind: key", "kind: ApiKey")),
    ("maf-connection-unrecorded", AGENT, ("kind: key", "kind: anonymous"), ("kind: key", "kind: key")),
    ("maf-powerfx", AGENT, ("Classify the page.", "=Concat(\"a\", \"b\")"),
     ("Classify the page.", "Answer as a=b, never =Concat")),
    ("maf-action-unknown", WORKFLOW, ("kind: SetVariable", "kind: SetVariables"),
     ("kind: SetVariable", "kind: SetMultipleVariables")),
    ("maf-action-unknown", WORKFLOW, ("kind: OnConversationStart", "kind: OnStart"),
     ("kind: OnConversationStart", "kind: OnConversationStart")),
    ("maf-action-field-missing", WORKFLOW, ("      variable: Local.Turns\n", ""),
     ("kind: SetVariable", "kind: SetValue")),  # SetValue takes variable for path
    ("maf-action-duplicate-id", WORKFLOW, ("id: count", "id: ask"), ("id: count", "id: ask2")),
    ("maf-goto-unresolved", WORKFLOW, ("actionId: ask", "actionId: asks"), ("actionId: ask", "actionId: count")),
    ("maf-agent-unresolved", WORKFLOW, ("name: Classifier", "name: Classifer"),
     ("name: Classifier", "name: Classifier")),
]


@pytest.mark.parametrize(("rule", "base", "breaking", "near"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_breaks_and_near_miss_is_clean(tmp_path: Path, rule: str, base: str, breaking: tuple[str, str],
                                            near: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_ENDPOINT", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("MY_KEY", "k")
    agent = {"classifier.yaml": AGENT} if base is WORKFLOW else {}
    name = "workflow.yaml" if base is WORKFLOW else "agent.yaml"
    assert breaking[0] in base and near[0] in base
    broken = rules_of(tmp_path, base.replace(breaking[0], breaking[1], 1), name, agent)
    assert rule in [r for r, _ in broken], broken
    clean = rules_of(tmp_path, base.replace(near[0], near[1], 1), name, agent)
    assert rule not in [r for r, _ in clean], clean
    if base is WORKFLOW:  # the agent file beside it resolves every reference; only the PowerFx note remains
        assert [r for r, _ in clean] in ([], ["maf-powerfx"]), clean


def test_unknown_key_names_the_nearest_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(AGENT.replace("instructions:", "instruction:"), encoding="utf-8")
    info = KINDS["agent_framework"].inspect(path)
    found = [f for f in info.findings if f.rule == "maf-unknown-key"]
    assert found[0].line == 3 and "did you mean 'instructions'" in found[0].message


def test_env_unset_in_ci_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_ENDPOINT", raising=False)
    monkeypatch.setenv("MY_KEY", "k")
    for var in ("CI", "GITHUB_ACTIONS", "TF_BUILD"):
        monkeypatch.delenv(var, raising=False)
    assert "maf-env-unset" not in [r for r, _ in rules_of(tmp_path, AGENT)]  # a laptop may replay
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert ("maf-env-unset", 12) in rules_of(tmp_path, AGENT)
    monkeypatch.setenv("MY_ENDPOINT", "http://127.0.0.1:1/v1")
    assert "maf-env-unset" not in [r for r, _ in rules_of(tmp_path, AGENT)]


def test_env_reference_is_not_a_literal_secret(tmp_path: Path) -> None:
    assert "secret-literal" not in [r for r, _ in rules_of(tmp_path, AGENT.replace("key: =Env.MY_KEY",
                                                                                   "apiKey: =Env.MY_KEY"))]
    assert "secret-literal" in [r for r, _ in rules_of(tmp_path, AGENT.replace(
        "key: =Env.MY_KEY", "key: sk-proj-" + "a" * 40))]


TOOLS_AGENT = AGENT + """\
tools:
  - kind: function
    name: GetWeather
    description: the weather
    bindings:
      get_weather: get_weather
"""


def test_function_binding_must_exist(tmp_path: Path) -> None:
    assert ("maf-binding-missing", 19) in rules_of(tmp_path, TOOLS_AGENT)  # no bindings file at all
    broken = rules_of(tmp_path, TOOLS_AGENT, extra={"tools.py": "def get_wether(city):\n    return city\n"})
    assert ("maf-binding-missing", 19) in broken
    clean = rules_of(tmp_path, TOOLS_AGENT, extra={"tools.py": "def get_weather(city):\n    return city\n"})
    assert "maf-binding-missing" not in [r for r, _ in clean]


def test_mcp_and_openapi_specs(tmp_path: Path) -> None:
    mcp = AGENT + "tools:\n  - kind: mcp\n    name: learn\n"
    assert "maf-spec-missing" in [r for r, _ in rules_of(tmp_path, mcp)]
    assert "maf-spec-missing" not in [r for r, _ in rules_of(tmp_path, mcp + "    url: https://x.invalid/mcp\n")]
    api = AGENT + "tools:\n  - kind: openapi\n    name: weather\n    specification: weather.json\n"
    assert "maf-spec-missing" in [r for r, _ in rules_of(tmp_path, api)]
    assert "maf-spec-missing" not in [r for r, _ in rules_of(tmp_path, api, extra={"weather.json": "{}"})]


ENTRY_CASES = [
    ("def create_workflow():\n    return WorkflowBuilder(start_executor=a).build()\n", None),
    ("def create_workflow() -> Workflow:\n    return make()\n", None),
    ("def create_workflow():\n    wf = WorkflowBuilder(start_executor=a).build()\n    return wf\n", None),
    ("def create_workflow(client):\n    return WorkflowBuilder(start_executor=a).build()\n", "maf-entry-returns"),
    ("def create_workflow():\n    WorkflowBuilder(start_executor=a).build()\n", "maf-entry-returns"),
    ("def create_workflow():\n    return {'a': 1}\n", "maf-entry-returns"),
    ("class create_workflow:\n    pass\n", "maf-entry-returns"),
    ("def create_workflw():\n    return 1\n", "maf-entry-missing"),
    ("def create_workflow(:\n", "maf-entry-syntax"),
    ("create_workflow = 'text'\n", "maf-entry-returns"),
    ("create_workflow = client.as_agent(name='a')\n", None),
]


@pytest.mark.parametrize(("source", "rule"), ENTRY_CASES)
def test_python_entry_facts(source: str, rule: str | None) -> None:
    facts = entry_facts(source, "workflow.py", "create_workflow")
    assert (facts.problem[0] if facts.problem else None) == rule


def test_samples_lint_with_no_false_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The framework's own samples (microsoft/agent-framework declarative-agents/): the only errors are true ones,
    each checked against the framework itself (agent-framework-declarative 1.4.0). Linted as on a laptop: in CI
    (CI, GITHUB_ACTIONS or TF_BUILD set) an =Env.NAME the environment lacks is an error of its own."""
    for name in ("CI", "GITHUB_ACTIONS", "TF_BUILD"):
        monkeypatch.delenv(name, raising=False)
    errors = {}
    for path in sorted(SAMPLES.rglob("*.yaml")):
        kind = kind_for(path)
        assert kind is not None and kind.name == "agent_framework", path
        found = [f.rule for f in kind.inspect(path).findings if f.severity == "error"]
        if found:
            errors[path.relative_to(SAMPLES).as_posix()] = found
    assert errors == {
        # the loader's provider table has no Assistants entry: ProviderLookupError "Unsupported provider type"
        "agent-samples/azure/AzureOpenAIAssistants.yaml": ["maf-provider-unknown"],
        "agent-samples/openai/OpenAIAssistants.yaml": ["maf-provider-unknown"],
        # binds get_weather, which the sample's YAML alone does not provide (its Python host passes it in code)
        "agent-samples/chatclient/GetWeather.yaml": ["maf-binding-missing"],
    }


def test_lint_imports_no_framework(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from llmops_ci.kinds import kind_for
        for p in sorted(Path({str(SAMPLES)!r}).rglob("*.yaml")):
            kind_for(p).inspect(p)
        bad = [m for m in sys.modules if m.split(".")[0] in
               ("agent_framework", "agent_framework_declarative", "promptflow", "mlflow", "azure", "powerfx")]
        print(bad)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


CONFIG = """\
    version: 1
    connections:
      openai:
        type: open_ai
        api_key: ${env:OPENAI_API_KEY}
    flows:
      agent:
        path: agents/classify.yaml
        data: data/pages.jsonl
        column_mapping:
          input: ${data.text}
        evaluations:
          exact:
            path: evals/exact
            column_mapping:
              groundtruth: ${data.label}
              prediction: ${run.outputs.category}
      app:
        path: apps/classify
        agent_framework: {entry: workflow.py:create_workflow}
        data: data/pages.jsonl
        column_mapping:
          input: ${data.text}
    """
FILES = {
    "llmops.yaml": CONFIG,
    "agents/classify.yaml": """\
        kind: Prompt
        name: Classifier
        instructions: Classify.
        model:
          id: gpt-4o-mini
          provider: OpenAI
          connection:
            kind: reference
            name: openai
        outputSchema:
          properties:
            category:
              type: string
        """,
    "apps/classify/workflow.py": """\
        def create_workflow():
            return WorkflowBuilder(start_executor=a).build()
        """,
    "evals/exact/flow.flex.yaml": "entry: exact:grade\n",
    "evals/exact/exact.py": """\
        from typing import TypedDict


        class Grade(TypedDict):
            exact: float


        def grade(groundtruth: str, prediction: str) -> Grade:
            return {"exact": float(groundtruth == prediction)}
        """,
    "data/pages.jsonl": json.dumps({"text": "a", "label": "App"}) + "\n",
}


def test_project_lint_checks_mapping_outputs_connections_and_entry(project: Callable[..., Project],
                                                                   cli: Callable[..., CliResult]) -> None:
    project(FILES, base=False)
    result = cli("lint", "--format", "json")
    assert result.code in (0, 1), result.err
    errors = [f for f in json.loads(result.out)["findings"] if f["severity"] == "error"]
    assert errors == [], errors
    broken = dict(FILES)
    broken["llmops.yaml"] = (CONFIG.replace("${run.outputs.category}", "${run.outputs.categry}")
                             .replace("name: openai", "name: openai").replace("workflow.py:create_workflow",
                                                                               "workflow.py:create_workflw"))
    broken["agents/classify.yaml"] = FILES["agents/classify.yaml"].replace("name: openai", "name: opena")
    project(broken, base=False)
    result = cli("lint", "--format", "json")
    assert result.code == 1
    rules = sorted(f["rule"] for f in json.loads(result.out)["findings"] if f["severity"] == "error")
    assert "maf-entry-missing" in rules and "connection-undeclared" in rules
    assert any("categry" in f["message"] for f in json.loads(result.out)["findings"]), result.out


@pytest.mark.parametrize(("source", "warned"), [
    ("def create_workflow():\n    return make()\n", True),  # cannot follow make()
    ("def create_workflow() -> Workflow:\n    return make()\n", False),  # the annotation says it
])
def test_entry_unchecked_is_a_warning_only_when_it_cannot_tell(project: Callable[..., Project],
                                                             cli: Callable[..., CliResult], source: str,
                                                             warned: bool) -> None:
    files = dict(FILES)
    files["apps/classify/workflow.py"] = source
    project(files, base=False)
    result = cli("lint", "--format", "json")
    found = [f for f in json.loads(result.out)["findings"] if f["rule"] == "maf-entry-unchecked"]
    assert bool(found) is warned
    assert result.code == 0
