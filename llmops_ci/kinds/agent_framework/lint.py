"""Checks of declarative Agent Framework files (agents and workflows) against the framework's own schema
(``agent_framework_schema``), without importing the framework: a mistake surfaces at its line, not at run time."""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llmops_ci.core.schema import closest
from llmops_ci.core.yamldoc import YamlDoc
from llmops_ci.diagnostics.findings import ERROR, WARNING, Finding, Rule, finding, rule_table
from llmops_ci.kinds.agent_framework.facts import agent_files
from llmops_ci.kinds.agent_framework.schema import (
    ACTION_ALTERNATES,
    ACTION_REQUIRED,
    ACTIONS,
    CONNECTIONS,
    MODEL,
    MODEL_OPTIONS,
    NESTED_ACTIONS,
    PROMPT_AGENT,
    PROPERTY,
    PROPERTY_SCHEMA,
    PROVIDERS,
    PROXY_PROVIDERS,
    TOOLS,
    TRIGGERS,
    WORKFLOW,
)

RULES = rule_table(
    Rule("maf-unknown-key", ERROR, "a key the Agent Framework declarative schema does not have (the framework "
                                   "ignores it silently); the nearest valid key is named"),
    Rule("maf-provider-unknown", ERROR, "model.provider (and apiType) is not one the framework can load"),
    Rule("maf-connection-kind", ERROR, "model.connection.kind is not reference, remote, key or anonymous"),
    Rule("maf-connection-unrecorded", WARNING, "a model whose calls cannot go through llmops-ci's record/replay "
                                               "proxy (a remote or anonymous connection, a non-OpenAI provider)"),
    Rule("maf-env-unset", ERROR, "=Env.NAME names a variable that is not set in CI (a run would send the literal)"),
    Rule("maf-powerfx", WARNING, "a PowerFx expression other than =Env.NAME: it needs the powerfx package and a "
                                 ".NET runtime, and stays literal without them"),
    Rule("maf-binding-missing", ERROR, "a function tool binds to a Python function that the bindings file does "
                                       "not define"),
    Rule("maf-spec-missing", ERROR, "an MCP tool without url, or an OpenAPI tool whose specification file is "
                                    "missing"),
    Rule("maf-action-unknown", ERROR, "a workflow action or trigger kind the framework does not know"),
    Rule("maf-action-field-missing", ERROR, "a workflow action without a field its kind requires"),
    Rule("maf-action-duplicate-id", ERROR, "two workflow actions with the same id"),
    Rule("maf-goto-unresolved", ERROR, "GotoAction.actionId names no action of the workflow"),
    Rule("maf-agent-unresolved", WARNING, "InvokeAzureAgent names an agent that no declarative agent file beside "
                                          "the workflow declares (it must be hosted, or given to WorkflowFactory)"),
    Rule("maf-entry-missing", ERROR, "agent_framework.entry names a file or attribute that does not exist"),
    Rule("maf-entry-syntax", ERROR, "the Python entry file does not parse"),
    Rule("maf-entry-returns", ERROR, "the entry is not a workflow or agent, or a factory that cannot return one "
                                     "(required arguments, no return, a plain value)"),
    Rule("maf-entry-unchecked", WARNING, "what the entry returns cannot be followed statically"),
)
ENV_REF = re.compile(r"^=\s*Env\.([A-Za-z_][A-Za-z0-9_]*)\s*$")
CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "TF_BUILD")


class DeclarativeChecker:
    def __init__(self, doc: YamlDoc, path: Path, environ: dict[str, str] | None = None) -> None:
        self.doc, self.path = doc, path
        self.environ = dict(os.environ if environ is None else environ)
        self.findings: list[Finding] = []
        self.env_names: set[str] = set()

    def add(self, rule: str, path: tuple[Any, ...], message: str, *, at_key: bool = False) -> None:
        line, column = self.doc.key_pos(*path) if at_key else self.doc.pos(*path)
        self.findings.append(finding(rule, self.doc.display, line, column, message))

    def keys(self, value: Any, allowed: Iterable[str], path: tuple[Any, ...], what: str) -> None:
        if not isinstance(value, dict):
            return
        allowed = set(allowed)
        for key in value:
            if key not in allowed:
                near = closest(str(key), allowed)
                hint = f"; did you mean '{near}'?" if near else f"; valid keys: {', '.join(sorted(allowed))}"
                self.add("maf-unknown-key", (*path, key), f"'{key}' is not a key {what}{hint}", at_key=True)

    # -- values anywhere ----------------------------------------------------------------------------------------
    def expressions(self, value: Any, path: tuple[Any, ...] = (), *, per_line: bool = True) -> bool:
        """=Env.NAME checks; PowerFx reported per value (agents) or once (workflows: returns True when seen)."""
        seen = False
        if isinstance(value, dict):
            for k, v in value.items():
                seen = self.expressions(v, (*path, k), per_line=per_line) or seen
        elif isinstance(value, list):
            for i, v in enumerate(value):
                seen = self.expressions(v, (*path, i), per_line=per_line) or seen
        elif isinstance(value, str) and value.startswith("="):
            found = ENV_REF.match(value)
            if found:
                name = found.group(1)
                self.env_names.add(name)
                if any(self.environ.get(v) for v in CI_VARIABLES) and name not in self.environ:
                    self.add("maf-env-unset", path, f"=Env.{name} is not set in this CI job; set {name} as a "
                             "secret or variable of the job (a run would send the text '=Env." + name + "')")
            else:
                if per_line:
                    self.add("maf-powerfx", path, f"'{value[:60]}' is a PowerFx expression: it needs the powerfx "
                             "package and a .NET runtime, and stays literal without them (llmops-ci resolves only "
                             "=Env.NAME and connection references)")
                seen = True
        return seen

    # -- agents ----------------------------------------------------------------------------------------------
    def agent(self, data: dict[str, Any], bindings: Path | None, path: tuple[Any, ...] = ()) -> None:
        self.keys(data, PROMPT_AGENT, path, "of a declarative agent")
        self.expressions(data, path)
        model = data.get("model")
        if isinstance(model, dict):
            self.model(model, (*path, "model"))
        for name in ("inputSchema", "outputSchema"):
            schema = data.get(name)
            if isinstance(schema, dict):
                self.keys(schema, PROPERTY_SCHEMA, (*path, name), f"of {name}")
                props = schema.get("properties")
                if isinstance(props, dict):
                    for prop, spec in props.items():
                        self.keys(spec, PROPERTY, (*path, name, "properties", prop), "of a property")
        tools = data.get("tools")
        if isinstance(tools, list):
            functions = _functions(bindings)
            for i, tool in enumerate(tools):
                if isinstance(tool, dict):
                    self.tool(tool, (*path, "tools", i), bindings, functions)

    def model(self, model: dict[str, Any], path: tuple[Any, ...]) -> None:
        self.keys(model, MODEL, path, "of model")
        self.keys(model.get("options"), MODEL_OPTIONS, (*path, "options"), "of model.options")
        provider, api = model.get("provider"), model.get("apiType")
        if isinstance(provider, str) and not provider.startswith("="):
            lookup = f"{provider}.{api}" if isinstance(api, str) and api else provider
            if lookup not in PROVIDERS:
                near = closest(lookup, PROVIDERS)
                self.add("maf-provider-unknown", (*path, "apiType" if api and provider in
                                                  {p.partition(".")[0] for p in PROVIDERS} else "provider"),
                         f"provider '{lookup}' is not one the framework loads"
                         + (f"; did you mean '{near}'?" if near else f"; known: {', '.join(sorted(PROVIDERS))}"))
            elif provider not in PROXY_PROVIDERS:
                self.add("maf-connection-unrecorded", (*path, "provider"), f"provider '{provider}' does not speak "
                         "the OpenAI HTTP API: its calls cannot be recorded or replayed by llmops-ci")
        conn = model.get("connection")
        if isinstance(conn, dict):
            kind = str(conn.get("kind") or "").lower()
            if kind not in CONNECTIONS:
                near = closest(kind, [k for k in CONNECTIONS if k != "apikey"])
                self.add("maf-connection-kind", (*path, "connection", "kind"), f"connection kind '{conn.get('kind')}' "
                         "is unknown; use reference, remote, key or anonymous"
                         + (f" (did you mean '{near}'?)" if near else ""))
                return
            self.keys(conn, CONNECTIONS[kind], (*path, "connection"), f"of a '{kind}' connection")
            if kind in ("remote", "anonymous"):
                self.add("maf-connection-unrecorded", (*path, "connection", "kind"), f"a '{kind}' connection cannot "
                         "go through llmops-ci's record/replay proxy; use 'kind: key' with an endpoint, or "
                         "'kind: reference' naming an llmops.yaml connection")

    def tool(self, tool: dict[str, Any], path: tuple[Any, ...], bindings: Path | None,
             functions: dict[str, int] | None) -> None:
        kind = str(tool.get("kind") or "")
        if kind not in TOOLS:
            near = closest(kind, TOOLS)
            self.add("maf-unknown-key", (*path, "kind"), f"tool kind '{kind}' is unknown"
                     + (f"; did you mean '{near}'?" if near else f"; known: {', '.join(sorted(TOOLS))}"))
            return
        self.keys(tool, TOOLS[kind], path, f"of a '{kind}' tool")
        if kind == "function":
            targets = _binding_targets(tool.get("bindings"))
            for key, target in targets:
                if functions is None:
                    self.add("maf-binding-missing", (*path, "bindings", key), f"the tool binds to '{target}' but no "
                             "bindings file is found: put the functions in tools.py beside the agent file, or name the "
                             "file with agent_framework: {bindings: <file>.py} in llmops.yaml")
                elif target not in functions:
                    near = closest(target, functions)
                    self.add("maf-binding-missing", (*path, "bindings", key), f"'{target}' is not a function of "
                             f"{bindings.name if bindings else 'the bindings file'}"
                             + (f"; did you mean '{near}'?" if near else ""))
        elif kind == "mcp" and not tool.get("url") and not tool.get("connection"):
            self.add("maf-spec-missing", path, "an MCP tool needs url (the server's address) or a connection")
        elif kind == "openapi":
            spec = tool.get("specification")
            if not spec:
                self.add("maf-spec-missing", path, "an OpenAPI tool needs specification (a file path or URL)")
            elif isinstance(spec, str) and not spec.startswith(("=", "http://", "https://", "{")) \
                    and "\n" not in spec and not (self.path.parent / spec).is_file():
                self.add("maf-spec-missing", (*path, "specification"), f"the OpenAPI specification '{spec}' does not "
                         f"exist beside {self.path.name}")

    # -- workflows --------------------------------------------------------------------------------------------
    def workflow(self, data: dict[str, Any]) -> None:
        self.keys(data, WORKFLOW, (), "of a declarative workflow")
        if self.expressions(data, per_line=False):
            self.add("maf-powerfx", ("kind",), "this workflow uses PowerFx expressions (=...): it runs only where "
                     "the powerfx package and a .NET runtime are installed")
        root: tuple[Any, ...] = ()
        trigger = data.get("trigger")
        if isinstance(trigger, dict):
            kind = trigger.get("kind")
            if kind is not None and kind not in TRIGGERS:
                self.add("maf-action-unknown", ("trigger", "kind"), f"trigger kind '{kind}' is unknown; use "
                         "OnConversationStart")
            root = ("trigger",)
            actions = trigger.get("actions")
        else:
            actions = data.get("actions")
        found: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self._collect(actions, (*root, "actions"), found)
        ids: dict[str, tuple[Any, ...]] = {}
        for path, action in found:
            action_id = action.get("id")
            if isinstance(action_id, str):
                if action_id in ids:
                    self.add("maf-action-duplicate-id", (*path, "id"), f"action id '{action_id}' is used twice "
                             f"(first at line {self.doc.pos(*ids[action_id], 'id')[0]}); ids must be unique")
                else:
                    ids[action_id] = path
        agents = agent_files(self.path.parent)
        for path, action in found:
            kind = action.get("kind")
            if not isinstance(kind, str) or kind not in ACTIONS:
                near = closest(str(kind), ACTIONS)
                self.add("maf-action-unknown", (*path, "kind"), f"action kind '{kind}' is unknown"
                         + (f"; did you mean '{near}'?" if near else ""))
                continue
            for field in ACTION_REQUIRED.get(kind, ()):
                if field not in action and not any(a in action for a in ACTION_ALTERNATES.get(f"{kind}.{field}", ())):
                    self.add("maf-action-field-missing", path, f"a {kind} action needs '{field}'")
            if kind == "GotoAction":
                target = action.get("actionId", action.get("target"))
                if isinstance(target, str) and not target.startswith("=") and target not in ids:
                    near = closest(target, ids)
                    self.add("maf-goto-unresolved", (*path, "actionId" if "actionId" in action else "target"),
                             f"GotoAction goes to '{target}', which no action has as id"
                             + (f"; did you mean '{near}'?" if near else ""))
            if kind == "InvokeAzureAgent":
                agent = action.get("agent")
                name = agent.get("name") if isinstance(agent, dict) else agent
                if isinstance(name, str) and not name.startswith("=") and name not in agents:
                    self.add("maf-agent-unresolved", (*path, "agent"), f"no declarative agent named '{name}' beside "
                             f"{self.path.name}; llmops-ci runs the workflow with the agent files of its folder "
                             "(a hosted agent runs only where it is hosted)")

    def _collect(self, actions: Any, path: tuple[Any, ...], out: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> None:
        if not isinstance(actions, list):
            return
        for i, action in enumerate(actions):
            if not isinstance(action, dict):
                continue
            here = (*path, i)
            out.append((here, action))
            for key in NESTED_ACTIONS:
                if isinstance(action.get(key), list):
                    self._collect(action[key], (*here, key), out)
            for j, branch in enumerate(action.get("conditions") or []):
                if isinstance(branch, dict):
                    self._collect(branch.get("actions"), (*here, "conditions", j, "actions"), out)


def _binding_targets(bindings: Any) -> list[tuple[Any, str]]:
    if isinstance(bindings, dict):
        return [(k, v if isinstance(v, str) else str(k)) for k, v in bindings.items()]
    if isinstance(bindings, list):
        return [(i, str(b.get("name"))) for i, b in enumerate(bindings) if isinstance(b, dict) and b.get("name")]
    return []


def _functions(path: Path | None) -> dict[str, int] | None:
    """The module-level functions (and names bound at module level) of a bindings file, or None if none."""
    if path is None or not path.is_file():
        return None
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, OSError, UnicodeDecodeError):
        return {}
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = node.lineno
        elif isinstance(node, ast.Assign):
            out.update({t.id: node.lineno for t in node.targets if isinstance(t, ast.Name)})
    return out
