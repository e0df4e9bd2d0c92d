"""The Databricks resources an MLflow agent's calls use (``scan``): each client call, read with the names its own
function sees (``Scanner`` resolves them)."""

from __future__ import annotations

import ast
from pathlib import Path

from llmops_ci.kinds.mlflow.calls import (
    APP_URL,
    CALLS,
    MCP_PATH,
    OPENAI_CALLS,
    SQL_CALLS,
    SQL_TABLE,
    WAREHOUSE_PATH,
)
from llmops_ci.kinds.mlflow.scan import AgentCode, Scanner, Scope, Unresolved, Use, callee, dotted


def scan(tree: ast.Module, folder: Path) -> AgentCode:
    s = Scanner(tree, folder)
    s.prepare()
    code = s.code
    scopes: list[tuple[ast.AST, Scope]] = [(tree, s.module)]
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and id(fn) in s.scopes:
            scopes.append((fn, s.scopes[id(fn)]))
    seen: set[int] = set()
    # innermost scope first so a call is read with the names its own function sees
    for root, scope in reversed(scopes):
        for node in ast.walk(root):
            if isinstance(node, ast.Call) and id(node) not in seen:
                seen.add(id(node))
                _call(s, node, scope)
    return code


def _add(s: Scanner, rtype: str, node: ast.expr, scope: Scope, via: str, at: ast.AST) -> None:
    value = s.value(node, scope)
    line, col = getattr(at, "lineno", 1), getattr(at, "col_offset", 0) + 1
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, str):
            s.code.uses.append(Use(rtype, item, line, col, via))
        elif isinstance(item, Unresolved):
            s.code.uses.append(Use(rtype, None, line, col, via, item.why))
        else:
            s.code.uses.append(Use(rtype, None, line, col, via, "a value that is not a string"))


def _call(s: Scanner, node: ast.Call, scope: Scope) -> None:
    name = dotted(node.func)
    if name.split(".")[-1] == "set_model" and (name in ("set_model", "models.set_model", "mlflow.models.set_model")):
        s.code.set_model = node
        if node.args:
            target, _ = s.origin(node.args[0], scope)
            if isinstance(target, ast.Call) and isinstance(target.func, ast.Name):
                s.code.agent_class = target.func.id
    short = callee(node)
    for rtype, keywords, position in CALLS.get(short, []):
        arg = next((k for k in node.keywords if k.arg in keywords), None)
        if arg is not None:
            _add(s, rtype, arg.value, scope, f"{short}({arg.arg}=...)", arg.value)
        elif position is not None and len(node.args) > position:
            _add(s, rtype, node.args[position], scope, f"{short}(...)", node.args[position])
    for kw in node.keywords:
        if kw.arg == "warehouse_id":
            _add(s, "sql_warehouse", kw.value, scope, f"{short}(warehouse_id=...)", kw.value)
        elif kw.arg == "http_path":
            path = s.value(kw.value, scope)
            match = WAREHOUSE_PATH.search(path) if isinstance(path, str) else None
            if match:
                s.code.uses.append(Use("sql_warehouse", match.group(1), kw.value.lineno, kw.value.col_offset + 1,
                                       f"{short}(http_path=...)"))
        elif kw.arg in ("server_url", "url"):
            _mcp(s, kw.value, scope, short)
    if short in SQL_CALLS:
        keyword, position = SQL_CALLS[short]
        sql: ast.expr | None = next((k.value for k in node.keywords if k.arg == keyword), None)
        if sql is None and len(node.args) > position:
            sql = node.args[position]
        text = s.value(sql, scope) if sql is not None else None
        if sql is not None and isinstance(text, str):
            for match in SQL_TABLE.finditer(text):
                s.code.uses.append(Use("table", match.group(1), sql.lineno, sql.col_offset + 1, f"{short}(...) SQL"))
    if short == "get" and dotted(node.func).split(".")[-2:-1] == ["apps"]:  # WorkspaceClient().apps.get(name)
        app: ast.expr | None = next((k.value for k in node.keywords if k.arg == "name"),
                                    node.args[0] if node.args else None)
        if app is not None:
            _add(s, "app", app, scope, "apps.get(...)", app)
    if short == "table" and node.args and dotted(node.func).split(".")[-2:-1] in (["spark"], ["read"]):
        _add(s, "table", node.args[0], scope, f"{dotted(node.func)}(...)", node.args[0])
    _model_call(s, node, scope)


def _model_call(s: Scanner, node: ast.Call, scope: Scope) -> None:
    """``client.chat.completions.create(model=...)`` and friends on a client that points at Databricks."""
    model = next((k for k in node.keywords if k.arg == "model"), None)
    if model is None:
        return
    if callee(node) in ("ChatOpenAI", "OpenAIEmbeddings"):
        if s.databricks_client(node, scope):
            _add(s, "serving_endpoint", model.value, scope, f"{callee(node)}(model=...) on Databricks", model.value)
        return
    chain = node.func
    if not isinstance(chain, ast.Attribute) or chain.attr not in ("create", "stream", "parse"):
        return
    while isinstance(chain, ast.Attribute):
        if chain.attr in OPENAI_CALLS and getattr(chain.value, "attr", None) not in OPENAI_CALLS:
            if s.databricks_client(chain.value, scope):
                via = f"{dotted(node.func).split('.', 1)[-1]}(model=...) on a Databricks client"
                _add(s, "serving_endpoint", model.value, scope, via, model.value)
            return
        chain = chain.value


def _mcp(s: Scanner, node: ast.expr, scope: Scope, short: str) -> None:
    url = s.value(node, scope)
    app = APP_URL.search(url) if isinstance(url, str) else None
    if app:
        s.code.uses.append(Use("app", app.group(1), node.lineno, node.col_offset + 1, f"{short}(...) app URL"))
        return
    match = MCP_PATH.search(url) if isinstance(url, str) else None
    if not match:
        return
    kind, rest = match.group(1), match.group(2).strip("/").split("/")
    line, col = node.lineno, node.col_offset + 1
    if kind == "genie" and rest:
        s.code.uses.append(Use("genie_space", rest[0], line, col, f"{short}(...) MCP server"))
    elif len(rest) >= 2:
        rtype = "function" if kind == "functions" else "vector_search_index"
        name = ".".join(rest[:3]) if len(rest) >= 3 else f"{rest[0]}.{rest[1]}.*"
        s.code.uses.append(Use(rtype, name, line, col, f"{short}(...) MCP server"))
