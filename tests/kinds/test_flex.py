"""Kind ``flex``: every rule breaks on one edit of a clean flex flow and stays quiet on a near miss."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmops_ci.core.errors import UsageError
from llmops_ci.diagnostics.findings import RULES
from llmops_ci.kinds import KINDS, kind_for
from llmops_ci.kinds.base import FlowInput
from llmops_ci.kinds.flex import FLEX_RULES
from tests.conftest import Project

FLOW = "flows/chat/flow.flex.yaml"
CODE = "flows/chat/flow.py"
PROMPTY = "flows/chat/chat.prompty"
DATA = Path(__file__).parent / "data"

BASE: dict[str, str] = {
    FLOW: """\
        $schema: https://azuremlschemas.azureedge.net/promptflow/latest/Flow.schema.json
        entry: flow:ChatFlow
        inputs:
          question:
            type: string
            is_chat_input: true
          chat_history:
            type: list
            default: []
            is_chat_history: true
        outputs:
          answer:
            type: string
            is_chat_output: true
        init:
          model_config:
            type: AzureOpenAIModelConfiguration
          max_total_token:
            type: int
            default: 1024
        sample:
          inputs:
            question: What is prompt flow?
          init:
            model_config:
              connection: aoai
              azure_deployment: gpt-4o
        environment:
          python_requirements_txt: requirements.txt
        environment_variables:
          PF_LOG: info
          AOAI_BASE: ${aoai.api_base}
        additional_includes:
          - ../shared/helpers.py
        """,
    CODE: """\
        from pathlib import Path
        from typing import TypedDict

        from promptflow.core import AzureOpenAIModelConfiguration, Prompty

        BASE = Path(__file__).parent


        class Reply(TypedDict):
            answer: str


        class ChatFlow:
            def __init__(self, model_config: AzureOpenAIModelConfiguration, max_total_token: int = 1024):
                self.model_config = model_config
                self.max_total_token = max_total_token

            def __call__(self, question: str, chat_history: list = None) -> Reply:
                prompty = Prompty.load(source=BASE / "chat.prompty", model={"configuration": self.model_config})
                return Reply(answer=prompty(question=question, chat_history=chat_history or []))
        """,
    PROMPTY: """\
        ---
        name: Chat
        model:
          api: chat
          configuration:
            type: azure_openai
            azure_deployment: gpt-4o
          parameters:
            max_tokens: 256
        inputs:
          question:
            type: string
          chat_history:
            type: list
            default: []
        ---
        system:
        You answer briefly.
        {% for item in chat_history %}
        {{item.role}}:
        {{item.content}}
        {% endfor %}
        user:
        {{question}}
        """,
    "flows/chat/requirements.txt": "promptflow-core\n",
    "flows/shared/helpers.py": "def shorten(text):\n    return text[:100]\n",
    "flows/shared/requirements.txt": "promptflow-core\n",
}

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


@dataclass
class Case:
    bad: Edit
    good: Edit
    where: str
    line: int | None = None
    says: str = ""


IMPL = """\
    class ChatFlow:
        def __init__(self, model_config, max_total_token=1024):
            pass

        def __call__(self, question, chat_history=None):
            return {"answer": question}
    """
CASES: dict[str, Case] = {
    "flex-entry-invalid": Case(replace(FLOW, "entry: flow:ChatFlow", "entry: flow.ChatFlow"),
                               both(lambda p: p.path("flows/chat/pkg").mkdir(),
                                    lambda p: p.path(CODE).rename(p.path("flows/chat/pkg/flow.py")),
                                    replace(FLOW, "entry: flow:ChatFlow", "entry: pkg.flow:ChatFlow")),
                               FLOW, 2, "module:function or module:Class"),
    "flex-entry-missing": Case(replace(FLOW, "entry: flow:ChatFlow", "entry: flow:ChatFlw"),
                               both(write("flows/chat/impl.py", IMPL),
                                    write(CODE, "from impl import ChatFlow  # re-exported\n")),
                               CODE, 1, "did you mean 'ChatFlow'?"),
    "flex-entry-syntax": Case(replace(CODE, "class Reply(TypedDict):", "class Reply(TypedDict)"),
                              replace(CODE, "self.max_total_token = max_total_token",
                                      "self.max_total_token = (n := max_total_token)"),
                              CODE, 9),
    "flex-call-missing": Case(replace(CODE, "def __call__(", "def call("),
                              both(replace(CODE, "class ChatFlow:", "class Base:\n    def __call__(self, question: "
                                           "str, chat_history: list = None) -> Reply:\n        return Reply("
                                           "answer=question)\n\n\nclass ChatFlow(Base):"),
                                   replace(CODE, "def __call__(", "def call(")),
                              CODE, 13, "has no __call__"),
    "flex-class-init": Case(lambda p: p.write(CODE, "class ChatFlow:\n    def __call__(self, question, "
                                              "chat_history=None):\n        return {'answer': question}\n"),
                            lambda p: p.write(CODE, "class Base:\n    def __init__(self, model_config, max_total_token"
                                              "=1024):\n        pass\n\n\nclass ChatFlow(Base):\n    def __call__"
                                              "(self, question, chat_history=None):\n        return {'answer': "
                                              "question}\n"),
                            CODE, 1, "defines no __init__"),
    "flex-type-unsupported": Case(replace(CODE, "chat_history: list = None", "chat_history: list[dict] = None"),
                                  replace(CODE, "chat_history: list = None", "chat_history: Optional[list] = None"),
                                  CODE, 18, "write the bare 'list'"),
    "flex-input-mismatch": Case(replace(FLOW, "  chat_history:\n    type: list", "  topic:\n    type: string\n"
                                        "  chat_history:\n    type: list"),
                                lambda p: p.replace(FLOW, p.read(FLOW).split("outputs:")[0].split("entry: flow:ChatFlow"
                                                                                                  "\n")[1], ""),
                                FLOW, 7, "'topic'"),
    "flex-output-mismatch": Case(replace(FLOW, "  answer:\n    type: string\n    is_chat_output", "  answr:\n    "
                                         "type: string\n    is_chat_output"),
                                 both(replace(FLOW, "  answer:\n    type: string\n    is_chat_output", "  answr:\n    "
                                              "type: string\n    is_chat_output"),
                                      replace(CODE, " -> Reply:", ":")),
                                 FLOW, 12, "not returned: answr"),
    "flex-init-mismatch": Case(replace(FLOW, "init:\n  model_config:", "init:\n  model_cfg:"),
                               lambda p: p.replace(FLOW, "init:\n  model_config:\n    type: "
                                                   "AzureOpenAIModelConfiguration\n  max_total_token:\n    type: int\n"
                                                   "    default: 1024\n", ""),
                               FLOW, 16, "did you mean 'model_config'?"),
    "flex-init-type": Case(replace(FLOW, "type: AzureOpenAIModelConfiguration", "type: AzureOpenAIModelConfig"),
                           replace(FLOW, "type: AzureOpenAIModelConfiguration", "type: OpenAIModelConfiguration"),
                           FLOW, 17, "did you mean 'AzureOpenAIModelConfiguration'?"),
    "flex-model-config": Case(replace(FLOW, "      azure_deployment: gpt-4o", "      azure_deployment: gpt-4o\n"
                                      "      api_key: ${env:AZURE_OPENAI_API_KEY}"),
                              replace(FLOW, "      connection: aoai", "      azure_endpoint: "
                                      "${env:AZURE_OPENAI_ENDPOINT}\n      api_key: ${env:AZURE_OPENAI_API_KEY}"),
                              FLOW, 28, "both 'connection' and 'api_key'"),
    "flex-include-missing": Case(replace(FLOW, "../shared/helpers.py", "../shared/helper.py"),
                                 replace(FLOW, "../shared/helpers.py", "../shared"), FLOW, 34),
    "flex-env-ref": Case(replace(FLOW, "PF_LOG: info", "PF_LOG: ${env:PF_LOG}"),
                         replace(FLOW, "PF_LOG: info", "PF_LOG: ${aoai.api_version}"), FLOW, 31,
                         "resolves only ${<connection>.<key>}"),
    "requirements-missing": Case(replace(FLOW, "python_requirements_txt: requirements.txt",
                                         "python_requirements_txt: requirement.txt"),
                                 replace(FLOW, "python_requirements_txt: requirements.txt",
                                         "python_requirements_txt: ../shared/requirements.txt"), FLOW, 29),
    "unknown-key": Case(replace(FLOW, "environment:", "enviroment:"), replace(FLOW, "environment:",
                                                                              "display_name: Chat\nenvironment:"),
                        FLOW, 28, "did you mean 'environment'?"),
    "input-type": Case(replace(FLOW, "  question:\n    type: string", "  question:\n    type: str"),
                       replace(FLOW, "  question:\n    type: string", "  question:\n    type: object"), FLOW, 5,
                       "did you mean 'string'?"),
    "llm-model-missing": Case(replace(FLOW, "      azure_deployment: gpt-4o", "      api_version: '2024-06-01'"),
                              both(replace(FLOW, "      azure_deployment: gpt-4o", "      model: gpt-4o"),
                                   replace(FLOW, "type: AzureOpenAIModelConfiguration",
                                           "type: OpenAIModelConfiguration"),
                                   replace(CODE, "model_config: AzureOpenAIModelConfiguration",
                                           "model_config: OpenAIModelConfiguration")),
                              FLOW, 25, "needs 'azure_deployment'"),
    "prompt-var-unbound": Case(replace(PROMPTY, "{{question}}", "{{question}} {{topic}}"),
                               replace(PROMPTY, "{{question}}", "{% set topic = question %}{{topic}}"),
                               PROMPTY, 24, "'topic'"),
}


@pytest.fixture
def flex(project: Callable[..., Project]) -> Project:
    return project(BASE, base=False)


def findings(proj: Project, rel: str = "flows/chat") -> list[tuple[str, str, int | None, str]]:
    info = KINDS["flex"].inspect(proj.path(rel))
    return [(f.rule, f.path, f.line, f.message) for f in info.findings]


def test_every_flex_rule_has_a_case() -> None:
    assert set(FLEX_RULES) <= set(CASES)
    assert set(FLEX_RULES) <= set(RULES)  # registered for lint's formats and SARIF


def test_base_is_clean_and_described(flex: Project) -> None:
    assert findings(flex) == []
    info = KINDS["flex"].inspect(flex.path("flows/chat"))
    assert info.kind == "flex" and info.loaded
    assert info.definition == flex.path(FLOW)
    assert info.inputs == {"question": FlowInput("question", "string", False),
                           "chat_history": FlowInput("chat_history", "list", True)}
    assert info.outputs == {"answer"}
    assert (info.chat_input, info.chat_history, info.chat_output) == ("question", "chat_history", "answer")
    assert info.environment_variables == {"PF_LOG": "info", "AOAI_BASE": "${aoai.api_base}"}
    assert [(c.node, c.connection, c.field, c.line, c.llm) for c in info.connections] == [
        ("model_config", "aoai", "connection", 26, False), ("environment_variables", "aoai", "api_base", 32, False)]
    assert [(d.path, d.label) for d in info.dependencies] == [(flex.path("flows/shared/helpers.py"),
                                                              "additional include")]


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires(rule: str, flex: Project) -> None:
    case = CASES[rule]
    case.bad(flex)
    hits = [f for f in findings(flex) if f[0] == rule]
    assert hits, f"{rule} did not fire; got {findings(flex)}"
    _, path, line, message = hits[0]
    assert path == case.where
    if case.line is not None:
        assert line == case.line, hits[0]
    assert case.says in message


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_near_miss_is_clean(rule: str, flex: Project) -> None:
    CASES[rule].good(flex)
    assert findings(flex) == []


def test_outputs_and_inputs_come_from_the_code_when_not_declared(flex: Project) -> None:
    flex.write(FLOW, "entry: flow:ChatFlow\n")
    info = KINDS["flex"].inspect(flex.path("flows/chat"))
    assert info.findings == []
    assert info.inputs == {"question": FlowInput("question", "string", False),
                           "chat_history": FlowInput("chat_history", "list", True)}
    assert info.outputs == {"answer"}
    flex.write(CODE, "def chat(question: str, n: int = 2) -> str:\n    return question\n")
    flex.write(FLOW, "entry: flow:chat\n")
    info = KINDS["flex"].inspect(flex.path("flows/chat"))
    assert info.inputs == {"question": FlowInput("question", "string", False), "n": FlowInput("n", "int", True)}
    assert info.outputs == {"output"}  # prompt flow names a primitive result 'output'


@pytest.mark.parametrize(("code", "line", "says"), [
    ("from __future__ import annotations\n\ndef chat(question: str) -> str:\n    return question\n", 1,
     "remove the import"),
    ("def chat(question: 'str') -> str:\n    return question\n", 1, "quoted annotation"),
    ("def chat(question: str | None = None) -> str:\n    return question\n", 1, "write Optional[...]"),
    ("from typing import Any\n\ndef chat(question: Any) -> str:\n    return question\n", 3, "'Any' is a complex"),
    ("def chat(question: str) -> dict:\n    return {}\n", 1, "must return str, a TypedDict or a dataclass"),
    ("class Q:\n    pass\n\ndef chat(question: Q) -> str:\n    return ''\n", 4, "take a dict"),
    ("from promptflow.core import OpenAIModelConfiguration\n\ndef chat(question: str, model_config: "
     "OpenAIModelConfiguration) -> str:\n    return ''\n", 3, "taken by __init__ only"),
])
def test_types_prompt_flow_refuses(code: str, line: int, says: str, flex: Project) -> None:
    """Each was run through prompt flow 1.18's meta generation: it fails with "a complex python type"."""
    flex.write(FLOW, "entry: flow:chat\n")
    flex.write(CODE, code)
    got = [(f[0], f[2], f[3]) for f in findings(flex)]
    assert [(r, n) for r, n, _ in got] == [("flex-type-unsupported", line)] and says in got[0][2], got


def test_types_prompt_flow_takes(flex: Project) -> None:
    flex.write(FLOW, "entry: flow:chat\n")
    flex.write(CODE, "from enum import Enum\nfrom typing import Optional\n\nclass Mode(str, Enum):\n    A = 'a'\n\n"
               "def chat(q: str, n: int = 1, x: float = 0.5, b: bool = False, items: list = None, d: dict = None, "
               "mode: Mode = Mode.A, o: Optional[str] = None, conn: 'AzureOpenAIConnection' = None):\n    return q\n")
    assert [f[3] for f in findings(flex)] == ["parameter 'conn' of chat(): the quoted annotation "
                                              "'AzureOpenAIConnection' reaches prompt flow as a string; write it "
                                              "unquoted"]


def test_dataclass_return_and_init_for_function(flex: Project) -> None:
    flex.write(CODE, "from dataclasses import dataclass\n\n@dataclass\nclass Out:\n    score: float\n    why: str\n\n"
               "def grade(answer: str) -> Out:\n    return Out(1.0, answer)\n")
    flex.write(FLOW, "entry: flow:grade\ninit:\n  model_config:\n    type: AzureOpenAIModelConfiguration\n")
    info = KINDS["flex"].inspect(flex.path("flows/chat"))
    assert info.outputs == {"score", "why"}
    assert [(f.rule, f.line) for f in info.findings] == [("flex-init-mismatch", 2)]


def test_requirements_outside_the_folder_is_a_dependency(flex: Project) -> None:
    CASES["requirements-missing"].good(flex)
    info = KINDS["flex"].inspect(flex.path("flows/chat"))
    assert (flex.path("flows/shared/requirements.txt"), "python_requirements_txt") in [
        (d.path, d.label) for d in info.dependencies]


def test_bad_yaml_is_a_finding_not_a_crash(flex: Project) -> None:
    flex.write(FLOW, "entry: flow:ChatFlow\ninputs: [\n")
    info = KINDS["flex"].inspect(flex.path("flows/chat"))
    assert not info.loaded
    assert [f.rule for f in info.findings] == ["yaml-syntax"]
    flex.write(FLOW, "- entry\n")
    assert [f.rule for f in KINDS["flex"].inspect(flex.path("flows/chat")).findings] == ["wrong-type"]


def test_secret_in_flex_yaml(flex: Project) -> None:
    flex.replace(FLOW, "PF_LOG: info", "OPENAI_API_KEY: sk-abcdefghijklmnopqrstuvwxyz0123")
    hits = [f for f in KINDS["flex"].inspect(flex.path("flows/chat")).findings if f.rule == "secret-literal"]
    assert hits and "sk-abc" not in hits[0].message


def test_kind_is_recognised(flex: Project) -> None:
    assert kind_for(flex.path("flows/chat")) is KINDS["flex"]
    assert kind_for(flex.path(FLOW)) is KINDS["flex"]
    assert kind_for(flex.path("flows/shared")) is None


def test_cli_lint_folder_and_discovery(flex: Project, cli: Callable[..., object]) -> None:
    res = cli("lint", "flows/chat")
    assert res.code == 0, res  # type: ignore[attr-defined]
    CASES["flex-call-missing"].bad(flex)
    res = cli("lint", "--format", "json")
    assert res.code == 1  # type: ignore[attr-defined]
    out = json.loads(res.out)  # type: ignore[attr-defined]
    assert [(f["rule"], f["path"], f["line"]) for f in out["findings"]] == [("flex-call-missing", CODE, 13)]


def test_snapshot_merges_includes_and_outside_requirements(flex: Project, tmp_path: Path) -> None:
    CASES["requirements-missing"].good(flex)
    kind = KINDS["flex"]
    info = kind.inspect(flex.path("flows/chat"))
    snap = kind.snapshot(info, tmp_path / "snap")  # type: ignore[attr-defined]
    assert snap.entry == tmp_path / "snap" / "flow.flex.yaml"
    assert (snap.folder / "helpers.py").is_file() and (snap.folder / "flow.py").is_file()
    assert (snap.folder / "requirements.txt").read_text() == "promptflow-core\n"
    copied = KINDS["flex"].inspect(snap.folder)
    assert copied.findings == [] and copied.dependencies == []
    with pytest.raises(UsageError, match="no variants"):
        kind.snapshot(info, tmp_path / "snap2", variant="${x.y}")  # type: ignore[attr-defined]


UPSTREAM = ["chat-basic", "eval-code-quality", "basic"]


@pytest.mark.parametrize("name", UPSTREAM)
def test_upstream_flex_examples_lint_clean(name: str) -> None:
    """Copies of microsoft/promptflow examples/flex-flows (MIT): no finding at all."""
    info = KINDS["flex"].inspect(DATA / "flex-flows" / name)
    assert info.loaded
    assert [(f.rule, f.line, f.message) for f in info.findings] == []


def test_upstream_chat_basic_interface() -> None:
    info = KINDS["flex"].inspect(DATA / "flex-flows" / "chat-basic")
    assert info.inputs == {"question": FlowInput("question", "string", True),
                           "chat_history": FlowInput("chat_history", "list", True)}
    assert info.outputs == {"output"}
    assert [c.connection for c in info.connections] == ["open_ai_connection"]


def test_dataclass_entry_takes_its_fields_as_init(flex: Project) -> None:
    flex.write(CODE, "from dataclasses import dataclass\n\n\n@dataclass\nclass ChatFlow:\n    model_config: dict\n"
               "    max_total_token: int = 1024\n\n    def __call__(self, question: str, chat_history: list = None):"
               "\n        return {'answer': question}\n")
    assert findings(flex) == []
    flex.replace(FLOW, "  max_total_token:\n    type: int\n    default: 1024\n", "")
    assert [(f[0], f[2]) for f in findings(flex)] == [("flex-init-mismatch", 15)]


def test_prompty_configuration_passed_by_code_is_not_checked(flex: Project) -> None:
    """flow.py loads chat.prompty with model={"configuration": ...}: the file's configuration is dead."""
    flex.replace(PROMPTY, "    type: azure_openai\n", "    type: unify\n    model_name: llama\n")
    assert findings(flex) == []
    flex.replace(CODE, ', model={"configuration": self.model_config})', ")")
    assert sorted(f[0] for f in findings(flex)) == ["unknown-key", "wrong-type"]


def test_flex_file_with_its_own_name(flex: Project, cli: Callable[..., object]) -> None:
    flex.path(FLOW).rename(flex.path("flows/chat/chat.flex.yaml"))
    assert kind_for(flex.path("flows/chat/chat.flex.yaml")) is KINDS["flex"]
    assert kind_for(flex.path("flows/chat")) is None
    flex.replace(CODE, "def __call__(", "def call(")
    res = cli("lint", "--format", "json")
    found = {(f["rule"], f["path"]) for f in json.loads(res.out)["findings"]}  # type: ignore[attr-defined]
    assert found == {("flex-call-missing", CODE)}


def test_outputs_not_visible_are_open(flex: Project, cli: Callable[..., object]) -> None:
    """An entry without a result annotation (it may return a dict): the evaluation may map any output."""
    flex.write(FLOW, "entry: flow:ChatFlow\n")
    flex.replace(CODE, " -> Reply:", ":")
    info = KINDS["flex"].inspect(flex.path("flows/chat"))
    assert info.outputs == set() and info.outputs_open
    flex.write("data.jsonl", '{"question": "q", "label": "a"}\n')
    flex.write("flows/eval/flow.flex.yaml", "entry: grade:grade\n")
    flex.write("flows/eval/grade.py", "def grade(answer: str, label: str):\n    return {'score': 1.0}\n")
    flex.write("llmops.yaml", """\
        version: 1
        flows:
          chat:
            path: flows/chat
            data: data.jsonl
            init:  # the class's __init__ requires it
              model_config: {azure_endpoint: "https://x.openai.azure.com", azure_deployment: gpt-4o}
            evaluations:
              judge:
                path: flows/eval
                column_mapping:
                  answer: ${run.outputs.answer}
                  label: ${data.label}
                scores: {score: score}
        """)
    res = cli("lint", "--config", "llmops.yaml", "--format", "json")
    assert json.loads(res.out)["findings"] == []  # type: ignore[attr-defined]


def test_dependencies_are_absolute_when_inspected_by_a_relative_path(flex: Project) -> None:
    info = KINDS["flex"].inspect(Path("flows/chat"))
    assert info.findings == []
    assert [d.path for d in info.dependencies] == [flex.path("flows/shared/helpers.py")]
    assert all(d.path.is_absolute() for d in info.dependencies)


def test_config_checks_init_and_environment_connections(flex: Project, cli: Callable[..., object]) -> None:
    flex.write("data.jsonl", '{"question": "q"}\n')
    flex.write("llmops.yaml", """\
        version: 1
        connections:
          aoai2:
            type: azure_open_ai
            api_base: ${env:AZURE_OPENAI_ENDPOINT}
            api_key: ${env:AZURE_OPENAI_API_KEY}
        flows:
          chat:
            path: flows/chat
            data: data.jsonl
        """)
    res = cli("lint", "--config", "llmops.yaml", "--format", "json")
    got = [(f["rule"], f["path"], f["line"]) for f in json.loads(res.out)["findings"]]  # type: ignore[attr-defined]
    # the class's __init__ requires model_config, which a run only gets from init: (sample.init is for pf flow test)
    assert got == [("connection-undeclared", FLOW, 26), ("connection-undeclared", FLOW, 32),
                   ("flex-init-mismatch", "llmops.yaml", 8)]
    flex.replace("llmops.yaml", "aoai2:", "aoai:")
    flex.replace("llmops.yaml", "    data: data.jsonl\n", "    data: data.jsonl\n    init:\n      model_config: "
                 "{connection: aoai, azure_deployment: gpt-4o}\n")
    assert cli("lint", "--config", "llmops.yaml").code == 0  # type: ignore[attr-defined]
