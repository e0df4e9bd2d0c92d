"""What an Agent Framework flow is, read without importing anything: which YAML files are declarative agents
or workflows, and what a Python entry (``module.py:create_workflow`` / ``module.py:agent``) defines (``ast``)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from llmops_ci.kinds.agent_framework.schema import AGENT_KINDS, WORKFLOW_KIND

YAML_SUFFIXES = (".yaml", ".yml")
# the top-level `kind:` of a file (a cheap look before parsing: recognition runs on every path a config names)
_TOP_KIND = re.compile(r"^kind:\s*['\"]?([A-Za-z]+)['\"]?\s*(?:#.*)?$", re.MULTILINE)
_TOP_NAME = re.compile(r"^name:\s*['\"]?([^'\"#\n]+?)['\"]?\s*(?:#.*)?$", re.MULTILINE)
MAX_SNIFF = 256 * 1024
# what a Python entry may return: classes of agent_framework (and the builder's `.build()`)
RUNNABLE_CLASSES = frozenset({"Workflow", "Agent", "ChatAgent", "BaseAgent", "SupportsAgentRun", "WorkflowAgent"})
RUNNABLE_CALLS = frozenset({"Agent", "ChatAgent", "as_agent", "create_agent", "build", "create_agent_from_yaml",
                            "create_agent_from_yaml_path", "create_workflow_from_yaml",
                            "create_workflow_from_yaml_path", "SequentialBuilder", "ConcurrentBuilder"})


def declared_kind(path: Path) -> str | None:
    """The top-level ``kind:`` of a YAML file when it is an Agent Framework one (Prompt, Agent, Workflow)."""
    if path.suffix not in YAML_SUFFIXES or path.name in ("flow.dag.yaml", "flow.flex.yaml", "llmops.yaml"):
        return None
    try:
        with path.open(encoding="utf-8") as fh:
            text = fh.read(MAX_SNIFF)
    except (OSError, UnicodeDecodeError):
        return None
    found = _TOP_KIND.search(text)
    kind = found.group(1) if found else None
    return kind if kind in (*AGENT_KINDS, WORKFLOW_KIND) else None


def agent_files(folder: Path) -> dict[str, Path]:
    """Declarative agent files in ``folder`` by their ``name:`` (what a workflow's InvokeAzureAgent names)."""
    out: dict[str, Path] = {}
    try:
        candidates = sorted(p for p in folder.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
    except OSError:
        return out
    for path in candidates:
        if declared_kind(path) in AGENT_KINDS:
            text = path.read_text(encoding="utf-8", errors="replace")[:MAX_SNIFF]
            found = _TOP_NAME.search(text)
            if found:
                out.setdefault(found.group(1).strip(), path)
    return out


@dataclass(frozen=True)
class EntryFacts:
    """What ``ast`` tells about ``attr`` in a Python entry file; ``problem``: (rule, line, message) when wrong."""

    defined_at: int | None
    is_factory: bool
    returns: str | None  # "runnable" | "other" | None (cannot tell)
    problem: tuple[str, int | None, str] | None = None


def _call_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Await):
        node = node.value
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute):
            return func.attr
        if isinstance(func, ast.Name):
            return func.id
    return None


def _annotation(node: ast.expr | None) -> str | None:
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.rpartition(".")[2]
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _judge(value: ast.expr, assigned: dict[str, ast.expr], depth: int = 0) -> str | None:
    """runnable / other / None for an expression a factory returns (or a module attribute is bound to)."""
    if isinstance(value, (ast.Constant, ast.Dict, ast.List, ast.Tuple, ast.Set, ast.JoinedStr)):
        return "other"
    name = _call_name(value)
    if name is not None:
        return "runnable" if name in RUNNABLE_CALLS or name.endswith(("Builder", "Agent")) else None
    if isinstance(value, ast.Name) and value.id in assigned and depth < 5:
        return _judge(assigned[value.id], assigned, depth + 1)
    return None


def _assignments(body: list[ast.stmt]) -> dict[str, ast.expr]:
    out: dict[str, ast.expr] = {}
    for stmt in body:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            out[stmt.target.id] = stmt.value
    return out


def entry_facts(source: str, filename: str, attr: str) -> EntryFacts:
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        return EntryFacts(None, False, None, ("maf-entry-syntax", exc.lineno, f"does not parse: {exc.msg}"))
    module_assigned = _assignments(tree.body)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == attr:
            args = node.args
            required = len(args.args) - len(args.defaults) + sum(d is None for d in args.kw_defaults)
            if required > 0:
                return EntryFacts(node.lineno, True, None, (
                    "maf-entry-returns", node.lineno, f"{attr}() takes required arguments; the entry is called with "
                    "none: give them defaults, or read them from the environment"))
            annotated = _annotation(node.returns)
            if annotated in RUNNABLE_CLASSES:
                return EntryFacts(node.lineno, True, "runnable")
            local = dict(module_assigned)
            for sub in ast.walk(node):
                if isinstance(sub, ast.Assign | ast.AnnAssign) and sub.value is not None:
                    targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                    for target in targets:
                        if isinstance(target, ast.Name):
                            local[target.id] = sub.value
            verdicts = [(r.lineno, _judge(r.value, local)) for r in ast.walk(node)
                        if isinstance(r, ast.Return) and r.value is not None]
            if not verdicts:
                return EntryFacts(node.lineno, True, "other", (
                    "maf-entry-returns", node.lineno, f"{attr}() returns nothing; it must return the workflow "
                    "(WorkflowBuilder(...).build()) or the agent"))
            bad = [line for line, verdict in verdicts if verdict == "other"]
            if bad:
                return EntryFacts(node.lineno, True, "other", (
                    "maf-entry-returns", bad[0], f"{attr}() returns a plain value here; it must return the workflow "
                    "(WorkflowBuilder(...).build()) or the agent"))
            if all(verdict == "runnable" for _, verdict in verdicts):
                return EntryFacts(node.lineno, True, "runnable")
            return EntryFacts(node.lineno, True, None)
        if isinstance(node, ast.ClassDef) and node.name == attr:
            return EntryFacts(node.lineno, False, None, (
                "maf-entry-returns", node.lineno, f"'{attr}' is a class; name a function returning the workflow or "
                "agent (module.py:create_workflow), or a module-level agent object (module.py:agent)"))
    if attr in module_assigned:
        value = module_assigned[attr]
        verdict = _judge(value, module_assigned)
        line = getattr(value, "lineno", None)
        if verdict == "other":
            return EntryFacts(line, False, "other", ("maf-entry-returns", line, f"'{attr}' is a plain value; it must "
                                                     "be the agent or workflow object"))
        return EntryFacts(line, False, verdict)
    return EntryFacts(None, False, None, ("maf-entry-missing", None, f"defines no '{attr}' at module level"))
