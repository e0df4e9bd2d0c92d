"""DAG flows: a corpus of valid shapes lints clean, references parse like prompt flow's, cycles are named."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.kinds import KINDS, kind_for
from llmops_ci.kinds.dag.kind import Ref, parse_ref
from tests.helpers.projects import Project

VALID_FLOWS: dict[str, dict[str, str]] = {
    "chat-with-history": {
        "flow.dag.yaml": """\
            inputs:
              chat_history:
                type: list
                is_chat_history: true
                default: []
              question:
                type: string
                is_chat_input: true
            outputs:
              answer:
                type: string
                reference: ${chat.output}
                is_chat_output: true
            nodes:
            - name: chat
              type: llm
              source:
                type: code
                path: chat.jinja2
              inputs:
                deployment_name: gpt-4o
                max_tokens: 256
                chat_history: ${inputs.chat_history}
                question: ${inputs.question}
              connection: open_ai_connection
              api: chat
            """,
        "chat.jinja2": """\
            # system:
            You are a helpful assistant.
            {% for item in chat_history %}
            # user:
            {{item.inputs.question}}
            # assistant:
            {{item.outputs.answer}}
            {% endfor %}
            {% for i in range(3) %}{{ loop.index }}{% endfor %}
            # user:
            {{question}}
            """,
    },
    "activate-and-kwargs": {
        "flow.dag.yaml": """\
            $schema: https://azuremlschemas.azureedge.net/promptflow/latest/Flow.schema.json
            inputs:
              query:
                type: string
              mode:
                type: string
                default: fast
            outputs:
              result:
                type: string
                reference: ${merge.output}
            nodes:
            - name: route
              type: python
              source:
                type: code
                path: route.py
              inputs:
                mode: ${inputs.mode}
            - name: fast
              type: python
              source:
                type: code
                path: lib/handler.py
              inputs:
                query: ${inputs.query}
                anything: 1
              activate:
                when: ${route.output}
                is: fast
            - name: slow
              type: prompt
              source:
                type: code
                path: slow.jinja2
              inputs:
                query: ${inputs.query}
              activate:
                when: ${route.output}
                is: slow
            - name: merge
              type: python
              source:
                type: code
                path: route.py
              inputs:
                mode: ${fast.output}
                extra: ${slow.output}
            additional_includes:
            - ../shared/lib
            """,
        "route.py": """\
            from promptflow.core import tool


            @tool
            async def route(mode: str, extra: str = "") -> str:
                return mode
            """,
        "slow.jinja2": "{% set q = query | upper %}Think about {{ q }}.\n",
        "../shared/lib/handler.py": """\
            from promptflow import tool


            @tool
            def handle(query: str, **kwargs) -> str:
                return query
            """,
    },
    "aggregation": {
        "flow.dag.yaml": """\
            inputs:
              answer:
                type: string
              truth:
                type: string
            outputs:
              score:
                type: double
                reference: ${score.output}
            nodes:
            - name: score
              type: python
              source:
                type: code
                path: score.py
              inputs:
                answer: ${inputs.answer}
                truth: ${inputs.truth}
            - name: aggregate
              type: python
              source:
                type: code
                path: aggregate.py
              inputs:
                scores: ${score.output}
              aggregation: true
            - name: report
              type: python
              source:
                type: code
                path: aggregate.py
              inputs:
                scores: ${aggregate.output}
              aggregation: true
            """,
        "score.py": """\
            from promptflow.core import tool


            class Scorer:
                @tool
                def score(self, answer: str, truth: str) -> float:
                    return float(answer == truth)
            """,
        "aggregate.py": """\
            from promptflow.core import log_metric, tool


            @tool
            def aggregate(scores: list) -> float:
                log_metric("mean", sum(scores) / len(scores))
                return 0.0
            """,
    },
    "python-connection": {
        "flow.dag.yaml": """\
            inputs:
              q:
                type: string
            outputs:
              r:
                type: object
                reference: ${search.output}
            nodes:
            - name: search
              type: python
              source:
                type: code
                path: search.py
              inputs:
                conn: my_search
                q: ${inputs.q}
            """,
        "search.py": """\
            from typing import Optional

            from promptflow.connections import CustomConnection
            from promptflow.core import tool


            @tool
            def search(conn: Optional[CustomConnection], q: str) -> dict:
                return {"q": q}
            """,
    },
}


@pytest.mark.parametrize("name", sorted(VALID_FLOWS))
def test_valid_flow_shapes_have_no_findings(name: str, project: Callable[..., Project]) -> None:
    files = {f"flows/{name}/{rel}": text for rel, text in VALID_FLOWS[name].items()}
    proj = project(files, base=False)
    report = proj.lint(config=None, paths=(f"flows/{name}",))
    assert [(f.rule, f.path, f.line, f.message) for f in report.findings] == []


def test_all_valid_flows_in_one_run(project: Callable[..., Project]) -> None:
    files = {f"flows/{n}/{rel}": t for n, flow in VALID_FLOWS.items() for rel, t in flow.items()}
    proj = project(files, base=False)
    report = proj.lint(config=None)  # discovery under the working directory
    assert report.flows_checked == len(VALID_FLOWS)
    assert report.errors == 0 and report.warnings == 0


def test_python_connection_argument_is_a_connection_use(project: Callable[..., Project]) -> None:
    proj = project({f"flows/p/{rel}": t for rel, t in VALID_FLOWS["python-connection"].items()}, base=False)
    info = KINDS["dag"].inspect(proj.path("flows/p"))
    assert [(u.node, u.connection, u.field, u.line) for u in info.connections] == [("search", "my_search", "conn", 15)]


@pytest.mark.parametrize(("value", "ref"), [
    ("${inputs.q}", Ref("input", "q")),
    ("${flow.q}", Ref("input", "q")),
    ("${node}", Ref("node", "node")),
    ("${node.output}", Ref("node", "node")),
    ("${node.output.a.b}", Ref("node", "node")),
    ("${node.outputs}", Ref("node", "node", "outputs")),
    ("literal ${inputs.q}", None),
    ("$inputs.q", None),
    (3, None),
])
def test_parse_ref_follows_prompt_flow(value: object, ref: Ref | None) -> None:
    assert parse_ref(value) == ref


def test_longer_cycle_is_named_in_data_flow_order(project: Callable[..., Project]) -> None:
    nodes = "".join(f"""
        - name: n{i}
          type: python
          source: {{type: code, path: t.py}}
          inputs: {{x: "${{n{(i + 1) % 4}.output}}"}}
        """ for i in range(4))
    proj = project({"f/flow.dag.yaml": "inputs: {}\noutputs:\n  o:\n    type: string\n    reference: ${n0.output}\n"
                    "nodes:" + nodes.replace("\n        ", "\n"),
                    "f/t.py": "from promptflow.core import tool\n@tool\ndef t(x):\n    return x\n"}, base=False)
    cycles = [f for f in proj.lint(config=None, paths=("f",)).findings if f.rule == "node-cycle"]
    assert len(cycles) == 1
    assert "n0 -> n3 -> n2 -> n1 -> n0" in cycles[0].message


def test_kind_detection(project: Callable[..., Project]) -> None:
    proj = project()
    assert kind_for(proj.path("flows/classify")) is KINDS["dag"]
    assert kind_for(proj.path("flows/classify/flow.dag.yaml")) is KINDS["dag"]
    assert kind_for(proj.path("data")) is None


def test_installed_package_tool_is_found_without_importing_it(project: Callable[..., Project]) -> None:
    proj = project()
    proj.replace("flows/classify/flow.dag.yaml", "  source:\n    type: code\n    path: parse.py\n",
                 "  source:\n    type: package\n    tool: promptflow.tools.openai.chat\n")
    code = ("import sys; from pathlib import Path; from llmops_ci.lint.project import lint, LintRequest;"
            "r = lint(LintRequest(paths=(Path('flows/classify'),)));"
            "print(sorted({f.rule for f in r.findings}));"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('promptflow', 'azure')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=proj.root, capture_output=True, text=True, check=True)
    rules, imported = out.stdout.splitlines()
    assert "package-tool-unchecked" not in rules
    assert imported == "[]"


# --- shapes from prompt flow's own examples ---------------------------------------------------------------------

UPSTREAM = Path(__file__).parent / "data" / "upstream"


def test_an_input_named_chat_history_is_the_history_unless_marked_otherwise(tmp_path: Path) -> None:
    info = KINDS["dag"].inspect(UPSTREAM / "chat-basic")  # chat_history has no is_chat_history
    assert (info.chat_input, info.chat_history, info.chat_output) == ("question", "chat_history", "answer")
    flow = tmp_path / "f"
    shutil.copytree(UPSTREAM / "chat-basic", flow)
    dag = flow / "flow.dag.yaml"
    dag.write_text(dag.read_text().replace("  chat_history:\n    type: list\n",
                                           "  chat_history:\n    type: list\n    is_chat_history: false\n"))
    assert KINDS["dag"].inspect(flow).chat_history is None


def test_a_python_return_annotation_types_the_output() -> None:
    # eval-chat-math declares `score: type: string` but line_process() -> int: the score is a number
    info = KINDS["dag"].inspect(UPSTREAM / "eval-chat-math")
    assert info.output_types == {"score": "int"}


LLM_PROMPT_INPUT = {
    "flow.dag.yaml": """\
        inputs:
          question: {type: string}
        outputs:
          answer: {type: string, reference: "${chat.output}"}
        nodes:
        - name: chat
          type: llm
          source: {type: code, path: chat.jinja2}
          connection: openai
          api: chat
          inputs:
            model: gpt-4o-mini
            prompt: ${inputs.question}
        """,
    "chat.jinja2": "# user:\n{{ question }} {{ context }}\n",
}


def test_an_llm_input_named_prompt_replaces_the_template(project: Callable[..., Project]) -> None:
    proj = project({f"flows/p/{k}": v for k, v in LLM_PROMPT_INPUT.items()}, base=False)
    assert [f.rule for f in proj.lint(config=None, paths=("flows/p",)).findings] == []
    proj.replace("flows/p/flow.dag.yaml", "prompt: ${inputs.question}", "question: ${inputs.question}")
    rules = sorted(f.rule for f in proj.lint(config=None, paths=("flows/p",)).findings)
    assert rules == ["prompt-var-unbound"]  # {{ context }} is unbound once the template is rendered
