"""What an MLflow agent's code uses on Databricks, found with ``ast`` alone (the agent is never imported).

Names are resolved the way a reader would: string literals, module constants, f-strings and ``+``,
dict/list constants, ``mlflow.models.ModelConfig(development_config=...)`` values, and ``self.x``
set in ``__init__`` from an argument the module passes when it builds the agent. What depends on an
environment variable or an argument nobody passes stays unresolved and says why.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmops_ci.kinds.mlflow.calls import (
    DATABRICKS_URL,
)

MAX_DEPTH = 25
@dataclass(frozen=True)
class Unresolved:
    why: str  # e.g. "environment variable LLM_ENDPOINT", "argument 'endpoint' of Agent.__init__"


@dataclass(frozen=True)
class Use:
    type: str
    name: str | None  # None: not resolvable statically (see why)
    line: int
    column: int
    via: str  # what in the code uses it, e.g. "ChatDatabricks(endpoint=...)"
    why: str = ""


@dataclass
class AgentCode:
    uses: list[Use] = field(default_factory=list)
    set_model: ast.Call | None = None
    agent_class: str | None = None  # the class of the object given to set_model, when it can be followed
    bases: dict[str, list[str]] = field(default_factory=dict)  # class -> base names (last part of each)
    imports: dict[str, int] = field(default_factory=dict)  # top-level module imported -> first line
    user_credentials: bool = False  # ModelServingUserCredentials (on-behalf-of-user auth) appears

    def ancestors(self, cls: str) -> set[str]:
        seen: set[str] = set()
        todo = [cls]
        while todo:
            for base in self.bases.get(todo.pop(), []):
                if base not in seen:
                    seen.add(base)
                    todo.append(base)
        return seen


def dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain (calls shown as ``()``), else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        inner = dotted(node.func)
        return f"{inner}()" if inner else ""
    return ""


def callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


@dataclass
class Scope:
    names: dict[str, ast.expr | None]  # None: assigned more than once
    params: dict[str, ast.expr | None]  # parameter -> default
    cls: str | None = None
    func: str | None = None


def _assignments(body: list[ast.stmt], nested: bool) -> dict[str, ast.expr | None]:
    out: dict[str, ast.expr | None] = {}
    stmts: Iterator[ast.AST] = (n for s in body for n in ast.walk(s)) if nested else iter(body)
    for node in stmts:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    out[target.id] = None if target.id in out else node.value
    return out


class Scanner:
    def __init__(self, tree: ast.Module, folder: Path) -> None:
        self.tree, self.folder = tree, folder
        self.module = Scope(_assignments(tree.body, nested=False), {})
        self.classes: dict[str, ast.ClassDef] = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        self.functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        # class -> attribute -> (expression, the method's scope); None when set in two places
        self.attrs: dict[str, dict[str, tuple[ast.expr, Scope] | None]] = {}
        self.scopes: dict[int, Scope] = {}  # id(function node) -> its scope
        self.instances: dict[str, list[ast.Call]] = {}  # class -> calls that build it at module level
        self.calls_to: dict[str, list[ast.Call]] = {}  # module function -> calls to it
        self.code = AgentCode()

    # -- scopes -------------------------------------------------------------------------------------------
    def _func_scope(self, fn: ast.FunctionDef | ast.AsyncFunctionDef, cls: str | None) -> Scope:
        args = fn.args
        positional = [*args.posonlyargs, *args.args]
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
        params: dict[str, ast.expr | None] = {a.arg: d for a, d in zip(positional, defaults, strict=True)}
        params.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)})
        for extra in (args.vararg, args.kwarg):
            if extra is not None:
                params[extra.arg] = None
        return Scope(_assignments(fn.body, nested=True), params, cls, fn.name)

    def prepare(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if not (isinstance(node, ast.ImportFrom) and node.level):
                    for n in names:
                        if n:
                            self.code.imports.setdefault(n.split(".")[0], node.lineno)
            elif isinstance(node, ast.ClassDef):
                self.code.bases[node.name] = [dotted(b).split(".")[-1] for b in node.bases]
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self._method(node.name, item)
            elif isinstance(node, ast.Name) and node.id == "ModelServingUserCredentials":
                self.code.user_credentials = True
        for fn in self.functions.values():
            self.scopes[id(fn)] = self._func_scope(fn, None)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id in self.classes:
                    self.instances.setdefault(node.func.id, []).append(node)
                elif node.func.id in self.functions:
                    self.calls_to.setdefault(node.func.id, []).append(node)

    def _method(self, cls: str, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        scope = self._func_scope(fn, cls)
        self.scopes[id(fn)] = scope
        table = self.attrs.setdefault(cls, {})
        for node in ast.walk(fn):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                        if _is_none(node.value):
                            continue  # `self.x = None` first, set for real later (lazy start-up)
                        table[t.attr] = None if t.attr in table else (node.value, scope)

    # -- following expressions ------------------------------------------------------------------------------
    def origin(self, node: ast.expr, scope: Scope, depth: int = 0) -> tuple[ast.expr, Scope]:
        """The expression a name or ``self.x`` stands for (itself when it cannot be followed)."""
        if depth > MAX_DEPTH:
            return node, scope
        if isinstance(node, ast.Name):
            found = self._lookup(node.id, scope)
            if found is not None:
                return self.origin(found[0], found[1], depth + 1)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self" \
                and scope.cls is not None:
            entry = self.attrs.get(scope.cls, {}).get(node.attr)
            if entry is not None:
                return self.origin(entry[0], entry[1], depth + 1)
        if isinstance(node, ast.Call):
            returned = self._returns(node, scope)
            if returned is not None:
                return self.origin(returned[0], returned[1], depth + 1)
        return node, scope

    def _returns(self, call: ast.Call, scope: Scope) -> tuple[ast.expr, Scope] | None:
        """What a call to one of this file's functions or ``self`` methods returns, when it returns one thing."""
        fn: ast.FunctionDef | ast.AsyncFunctionDef | None = None
        func = call.func
        if isinstance(func, ast.Name):
            fn = self.functions.get(func.id)
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self" \
                and scope.cls in self.classes:
            fn = next((m for m in self.classes[scope.cls].body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                       and m.name == func.attr), None)
        if fn is None or id(fn) not in self.scopes:
            return None
        values = [r.value for r in ast.walk(fn) if isinstance(r, ast.Return) and r.value is not None
                  and not _is_none(r.value)]
        return (values[0], self.scopes[id(fn)]) if len(values) == 1 else None

    def _lookup(self, name: str, scope: Scope) -> tuple[ast.expr, Scope] | None:
        if scope is not self.module:
            if name in scope.names:
                value = scope.names[name]
                return (value, scope) if value is not None else None
            if name in scope.params:
                return None
        value = self.module.names.get(name)
        return (value, self.module) if value is not None else None

    def value(self, node: ast.expr | None, scope: Scope, depth: int = 0) -> Any:
        """A str, list, dict or number the expression always has, or Unresolved saying why not."""
        if node is None:
            return Unresolved("a value that is not given")
        if depth > MAX_DEPTH:
            return Unresolved("a chain of names too long to follow")
        nxt = depth + 1
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, (str, int, float, bool)) else Unresolved("None")
        if isinstance(node, ast.JoinedStr):
            parts = []
            for part in node.values:
                v = self.value(part.value, scope, nxt) if isinstance(part, ast.FormattedValue) else \
                    self.value(part, scope, nxt)
                if isinstance(v, Unresolved):
                    return v
                parts.append(str(v))
            return "".join(parts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.value(node.left, scope, nxt), self.value(node.right, scope, nxt)
            for side in (left, right):
                if isinstance(side, Unresolved):
                    return side
            if isinstance(left, str) and isinstance(right, str):
                return left + right
            if isinstance(left, list) and isinstance(right, list):
                return left + right
            return Unresolved("an expression that is not a string")
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.value(e, scope, nxt) for e in node.elts]
        if isinstance(node, ast.Dict):
            out = {}
            for k, v in zip(node.keys, node.values, strict=True):
                key = self.value(k, scope, nxt) if k is not None else None
                if isinstance(key, str):
                    out[key] = self.value(v, scope, nxt)
            return out
        env = _env_name(node)
        if env is not None:
            return Unresolved(f"environment variable {env}")
        if isinstance(node, ast.Name):
            return self._name_value(node.id, scope, nxt)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            return self._attr_value(node.attr, scope, nxt)
        if isinstance(node, ast.Subscript):
            base = self.value(node.value, scope, nxt)
            key = self.value(node.slice, scope, nxt)
            return _index(base, key, dotted(node.value) or "a value")
        if isinstance(node, ast.Call):
            return self._call_value(node, scope, nxt)
        return Unresolved(f"'{ast.unparse(node)[:60]}'")

    def _name_value(self, name: str, scope: Scope, depth: int) -> Any:
        if scope is not self.module:
            if name in scope.names:
                value = scope.names[name]
                return self.value(value, scope, depth) if value is not None else Unresolved(
                    f"'{name}', which is assigned more than once")
            if name in scope.params:
                return self._param_value(name, scope, depth)
        if name in self.module.names:
            value = self.module.names[name]
            return self.value(value, self.module, depth) if value is not None else Unresolved(
                f"'{name}', which is assigned more than once")
        return Unresolved(f"'{name}'")

    def _attr_value(self, attr: str, scope: Scope, depth: int) -> Any:
        entry = self.attrs.get(scope.cls or "", {}).get(attr)
        if entry is None:
            cls = self.classes.get(scope.cls or "")
            for item in cls.body if cls is not None else []:
                if isinstance(item, (ast.Assign, ast.AnnAssign)) and item.value is not None:
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    if any(isinstance(t, ast.Name) and t.id == attr for t in targets):
                        return self.value(item.value, self.module, depth)
            return Unresolved(f"self.{attr}")
        return self.value(entry[0], entry[1], depth)

    def _param_value(self, name: str, scope: Scope, depth: int) -> Any:
        """An argument: what every call in the module passes for it (the class's builds for ``__init__``)."""
        what = f"argument '{name}' of {scope.cls + '.' if scope.cls else ''}{scope.func}"
        if scope.cls is not None:
            calls = self.instances.get(scope.cls, []) if scope.func == "__init__" else []
            fn = next((m for m in self.classes[scope.cls].body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                       and m.name == scope.func), None)
            offset = 1
        else:
            calls = self.calls_to.get(scope.func or "", [])
            fn = self.functions.get(scope.func or "")
            offset = 0
        if fn is None or not calls:
            return Unresolved(what)
        positional = [a.arg for a in [*fn.args.posonlyargs, *fn.args.args]][offset:]
        values = []
        for call in calls:
            given: ast.expr | None = next((k.value for k in call.keywords if k.arg == name), None)
            if given is None and name in positional and positional.index(name) < len(call.args):
                arg = call.args[positional.index(name)]
                given = None if isinstance(arg, ast.Starred) else arg
            if given is None:
                given = scope.params.get(name)
                values.append(self.value(given, scope, depth) if given is not None else Unresolved(what))
            else:
                values.append(self.value(given, self._scope_of(call), depth))
        first = values[0]
        if isinstance(first, Unresolved) or any(v != first for v in values[1:]):
            return first if isinstance(first, Unresolved) else Unresolved(f"{what}, given different values")
        return first

    def _scope_of(self, node: ast.AST) -> Scope:
        for fn in ast.walk(self.tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and id(fn) in self.scopes and any(
                    n is node for n in ast.walk(fn)):
                return self.scopes[id(fn)]
        return self.module

    def _call_value(self, node: ast.Call, scope: Scope, depth: int) -> Any:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "get" and node.args:
            base = self.value(func.value, scope, depth)
            key = self.value(node.args[0], scope, depth)
            if isinstance(base, dict) and isinstance(key, str) and key not in base and len(node.args) > 1:
                return self.value(node.args[1], scope, depth)
            return _index(base, key, dotted(func.value) or "a value")
        if callee(node) == "ModelConfig":
            return self._model_config(node, scope, depth)
        if isinstance(func, ast.Attribute) and func.attr == "join" and isinstance(func.value, ast.Constant) \
                and isinstance(func.value.value, str) and len(node.args) == 1:
            items = self.value(node.args[0], scope, depth)
            if isinstance(items, list) and all(isinstance(i, str) for i in items):
                return func.value.value.join(items)
        return Unresolved(f"the result of {dotted(func) or 'a call'}()")

    def _model_config(self, node: ast.Call, scope: Scope, depth: int) -> Any:
        given = next((k.value for k in node.keywords if k.arg == "development_config"), None)
        source = self.value(given, scope, depth) if given is not None else Unresolved(
            "a ModelConfig without development_config (its values come with the logged model)")
        if isinstance(source, (dict, Unresolved)):
            return source
        if not isinstance(source, str):
            return Unresolved("a ModelConfig whose development_config is not a file name")
        try:
            data = yaml.safe_load((self.folder / source).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            return Unresolved(f"the ModelConfig file {source} ({type(exc).__name__})")
        return data if isinstance(data, dict) else Unresolved(f"the ModelConfig file {source}, not a mapping")

    # -- what is Databricks ------------------------------------------------------------------------------------
    def databricks_client(self, node: ast.expr, scope: Scope) -> bool:
        expr, where = self.origin(node, scope)
        if not isinstance(expr, ast.Call):
            return False
        name = callee(expr)
        if name == "get_open_ai_client" or name in ("DatabricksOpenAI", "AsyncDatabricksOpenAI"):
            return True
        if name in ("OpenAI", "AsyncOpenAI", "ChatOpenAI", "OpenAIEmbeddings"):
            url = next((k.value for k in expr.keywords if k.arg in ("base_url", "openai_api_base")), None)
            return url is not None and self.points_at_databricks(url, where)
        return False

    def points_at_databricks(self, node: ast.expr, scope: Scope) -> bool:
        value = self.value(node, scope)
        if isinstance(value, str):
            return bool(DATABRICKS_URL.search(value))
        expr, _ = self.origin(node, scope)
        literal = "".join(p.value for p in ast.walk(expr) if isinstance(p, ast.Constant) and isinstance(p.value, str))
        return bool(DATABRICKS_URL.search(literal)) or "DATABRICKS_HOST" in {_env_name(n) for n in ast.walk(expr)
                                                                               if isinstance(n, ast.expr)}


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _env_name(node: ast.AST) -> str | None:
    """The variable behind ``os.environ[...]``, ``os.environ.get(...)`` or ``os.getenv(...)``."""
    if isinstance(node, ast.Subscript) and dotted(node.value).endswith("environ") and isinstance(
            node.slice, ast.Constant):
        return str(node.slice.value)
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        name = dotted(node.func)
        if name.endswith("environ.get") or name.endswith("getenv"):
            return str(node.args[0].value)
    return None


def _index(base: Any, key: Any, what: str) -> Any:
    if isinstance(base, Unresolved):
        return base
    if isinstance(key, Unresolved):
        return key
    if isinstance(base, dict) and isinstance(key, str):
        return base[key] if key in base else Unresolved(f"'{key}', which {what} does not have")
    if isinstance(base, list) and isinstance(key, int) and -len(base) <= key < len(base):
        return base[key]
    return Unresolved(f"{what}[{key!r}]")
