"""Microsoft Agent Framework flows (kind ``agent_framework``): declarative agents (``kind: Prompt`` / ``Agent``) and
declarative workflows (``kind: Workflow``) recognised by content, and Python workflows or agents declared in
llmops.yaml with ``agent_framework: {entry: workflow.py:create_workflow}`` (or ``module.py:agent``).

Inputs: ``input`` (the user message, or the workflow's input). Outputs: ``output`` (the final text) and, with an
``outputSchema``, its properties. Checked without importing the framework; run by ``backends/maf_local``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_ci.core.errors import UsageError
from llmops_ci.core.yamldoc import display_path
from llmops_ci.diagnostics.findings import Rule, finding, from_problem
from llmops_ci.diagnostics.origin import Origin
from llmops_ci.kinds.agent_framework.facts import agent_files, declared_kind, entry_facts
from llmops_ci.kinds.agent_framework.lint import RULES, DeclarativeChecker
from llmops_ci.kinds.agent_framework.schema import AGENT_KINDS, WORKFLOW_KIND
from llmops_ci.kinds.agent_framework.spec import AGENT_FRAMEWORK, AgentFrameworkSpec, framework_spec
from llmops_ci.kinds.base import ConnectionUse, Dependency, FlowInfo, FlowInput, Snapshot, open_definition

if TYPE_CHECKING:
    from llmops_ci.core.yamldoc import YamlDoc

KIND = "agent_framework"
ENGINE = "agent_framework"
SKIP = (".git", "__pycache__", ".venv", "venv", ".llmops", "node_modules", ".agents-site")
_TYPES = {"string": "string", "number": "double", "integer": "int", "boolean": "bool", "object": "object",
          "array": "list"}


def _io(info: FlowInfo, data: dict[str, Any]) -> None:
    info.inputs = {"input": FlowInput("input", "string", False)}
    info.outputs = {"output"}
    info.output_types = {"output": "string"}
    schema = data.get("outputSchema")
    props = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(props, dict):
        for name, spec in props.items():
            info.outputs.add(str(name))
            kind = spec.get("kind", spec.get("type")) if isinstance(spec, dict) else None
            if isinstance(kind, str) and kind in _TYPES:
                info.output_types[str(name)] = _TYPES[kind]


def _reference(info: FlowInfo, doc: YamlDoc, path: Path) -> None:
    """A ``connection: {kind: reference, name: X}``: the llmops.yaml connection X is one the run needs."""
    data = doc.data if isinstance(doc.data, dict) else {}
    model = data.get("model")
    conn = model.get("connection") if isinstance(model, dict) else None
    if isinstance(conn, dict) and str(conn.get("kind")).lower() == "reference" and isinstance(conn.get("name"), str):
        line, column = doc.pos("model", "connection", "name")
        info.connections.append(ConnectionUse(str(data.get("name") or path.stem), conn["name"], "connection",
                                              doc.display, line, column, llm=False))


def bindings_file(definition: Path, spec: AgentFrameworkSpec | None = None) -> Path | None:
    """The Python file whose functions ``kind: function`` tools bind to: declared, or tools.py / <stem>.py beside."""
    if spec is not None and spec.bindings is not None:
        return spec.bindings
    for candidate in (definition.parent / "tools.py", definition.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def inspect_declarative(path: Path, spec: AgentFrameworkSpec | None = None) -> FlowInfo:
    info = FlowInfo(kind=KIND, folder=path.parent, definition=path, engine=ENGINE, served_by=ENGINE)
    doc = open_definition(info, path, "(a declarative agent or workflow)")
    if doc is None:
        return info
    data = doc.data
    assert isinstance(data, dict)
    bindings = bindings_file(path, spec)
    if bindings is not None:
        info.dependencies.append(Dependency(bindings.absolute(), "tool bindings", display_path(path)))
    checker = DeclarativeChecker(doc, path)
    if data.get("kind") == WORKFLOW_KIND:
        checker.workflow(data)
        info.inputs = {"input": FlowInput("input", "string", False)}
        info.outputs, info.output_types = {"output"}, {"output": "string"}
        for agent in agent_files(path.parent).values():
            info.dependencies.append(Dependency(agent.absolute(), "workflow agent", display_path(path)))
            # the agents run as part of the workflow: checked with it, their connections are the run's
            sub = FlowInfo(kind=KIND, folder=path.parent, definition=agent)
            agent_doc = open_definition(sub, agent, "(a declarative agent)")
            info.findings += sub.findings
            if agent_doc is not None and isinstance(agent_doc.data, dict):
                agent_checker = DeclarativeChecker(agent_doc, agent)
                agent_checker.agent(agent_doc.data, bindings)
                info.findings += agent_checker.findings
                _reference(info, agent_doc, agent)
    else:
        checker.agent(data, bindings)
        _io(info, data)
        _reference(info, doc, path)
    info.findings += checker.findings
    info.environment_variables = {}
    return info


def inspect_entry(path: Path, spec: AgentFrameworkSpec) -> FlowInfo | None:
    """A flow declared with an ``agent_framework: {entry: ...}`` block; None for a declarative folder (inspected
    by its files)."""
    if spec.code is None:  # a declarative file with its bindings declared
        return inspect_declarative(path, spec) if path.is_file() else None
    info = FlowInfo(kind=KIND, folder=path, definition=spec.code, engine=ENGINE, served_by=ENGINE,
                    inputs={"input": FlowInput("input", "string", False)}, outputs={"output"},
                    output_types={"output": "string"}, outputs_open=True)  # a workflow may yield a dict
    where = spec.origin

    def config(message: str, rule: str) -> None:
        if where is not None:
            info.findings.append(from_problem(where.problem(("entry",), message, rule)))
        else:
            info.findings.append(finding(rule, "llmops.yaml", None, None, message))

    shown = display_path(spec.code)
    try:
        source = spec.code.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        config(f"agent_framework.entry: '{shown}' "
               f"{'does not exist' if isinstance(exc, FileNotFoundError) else f'cannot be read ({exc})'}; it is "
               "relative to the flow's path", "maf-entry-missing")
        info.loaded = False
        return info
    facts = entry_facts(source, str(spec.code), spec.attr)
    if facts.problem is not None:
        rule, line, message = facts.problem
        if rule == "maf-entry-missing":
            config(f"agent_framework.entry: {shown} {message}", rule)
        else:
            info.findings.append(finding(rule, shown, line, None, f"{spec.attr}: {message}"))
    elif facts.returns is None:
        info.findings.append(finding("maf-entry-unchecked", shown, facts.defined_at, None,
                                     f"cannot tell statically what '{spec.attr}' is; it must be (or return) an agent "
                                     "or a workflow (WorkflowBuilder(...).build())"))
    return info


class AgentFrameworkKind:
    name = KIND
    folder_files: tuple[str, ...] = ()
    block = KIND
    block_schema = AGENT_FRAMEWORK
    excludes = ("variant",)

    def declare(self, path: Path, raw: Any, origin: Origin) -> AgentFrameworkSpec | None:
        return framework_spec(path, raw, origin)

    def inspect_declared(self, path: Path, spec: AgentFrameworkSpec) -> FlowInfo | None:
        return inspect_entry(path, spec)

    def matches(self, path: Path) -> bool:
        try:
            return path.is_file() and declared_kind(path) is not None
        except (OSError, ValueError):
            return False

    def inspect(self, path: Path) -> FlowInfo:
        return inspect_declarative(path)

    def snapshot(self, info: FlowInfo, dest: Path, *, variant: str | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> Snapshot:
        """The flow's folder copied to ``dest`` (agent files, bindings and specs sit beside the definition)."""
        shown = display_path(info.definition)
        if variant is not None:
            raise UsageError(f"{shown}: an Agent Framework flow has no variants; remove 'variant:'")
        if overrides:
            raise UsageError(f"{shown}: 'connections:' overrides are for DAG nodes; an Agent Framework agent names "
                             "its connection in its model (connection: {kind: reference, name: <connection>})")
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(info.folder, dest, ignore=shutil.ignore_patterns(*SKIP), symlinks=True)
        try:
            return Snapshot(dest, dest / info.definition.relative_to(info.folder))
        except ValueError:
            raise UsageError(f"{shown} is outside the flow's folder {display_path(info.folder)}") from None

    def rules(self) -> list[Rule]:
        return list(RULES.values())


def is_agent(info: FlowInfo) -> bool:
    return info.kind == KIND and declared_kind(info.definition) in AGENT_KINDS
