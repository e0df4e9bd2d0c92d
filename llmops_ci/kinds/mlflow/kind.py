"""MLflow agents (models-from-code ``ResponsesAgent`` / ``ChatAgent``), declared by an ``mlflow_agent:`` block.

Checked with ``ast`` only: importing mlflow costs seconds and importing the agent runs its code. The
point of the check is the declared ``resources``: Databricks model serving grants the deployed agent
credentials for exactly those (automatic authentication passthrough), so a resource the code uses
but the config does not declare works in a notebook and fails with credential errors once served.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from llmops_ci.core.errors import ConfigError, UsageError
from llmops_ci.core.safe_copy import copy_tree
from llmops_ci.core.schema import as_dict, as_list, closest
from llmops_ci.core.yamldoc import YamlDoc, display_path, load_yaml
from llmops_ci.diagnostics.findings import ERROR, WARNING, Finding, Rule, finding, from_problem, rule_table
from llmops_ci.diagnostics.origin import Origin
from llmops_ci.kinds.base import FlowInfo, FlowInput, Snapshot
from llmops_ci.kinds.mlflow.scan import AgentCode, Use
from llmops_ci.kinds.mlflow.spec import (
    AGENT_RESOURCE_TYPES,
    MLFLOW_AGENT,
    AgentResource,
    MlflowAgentSpec,
    agent_spec,
)
from llmops_ci.kinds.mlflow.uses import scan

KIND = "mlflow_agent"
INTERFACES = {"responses": "ResponsesAgent", "chat": "ChatAgent"}
LABELS = {"serving_endpoint": "serving endpoint", "vector_search_index": "vector search index",
          "function": "Unity Catalog function", "genie_space": "Genie space", "sql_warehouse": "SQL warehouse",
          "table": "table", "uc_connection": "Unity Catalog connection", "app": "Databricks app",
          "lakebase": "Lakebase database instance", "uc_model_service": "Unity Catalog model service"}
# mlflow.models.resources: class and constructor argument for each resource type
MLFLOW_RESOURCES = {"serving_endpoint": ("DatabricksServingEndpoint", "endpoint_name"),
                    "vector_search_index": ("DatabricksVectorSearchIndex", "index_name"),
                    "function": ("DatabricksFunction", "function_name"),
                    "genie_space": ("DatabricksGenieSpace", "genie_space_id"),
                    "sql_warehouse": ("DatabricksSQLWarehouse", "warehouse_id"),
                    "table": ("DatabricksTable", "table_name"),
                    "uc_connection": ("DatabricksUCConnection", "connection_name"),
                    # MLflow 3.17.2 mlflow.models.resources
                    "app": ("DatabricksApp", "app_name"),
                    "lakebase": ("DatabricksLakebase", "database_instance_name"),
                    "uc_model_service": ("DatabricksUCModelService", "model_service_name")}
# the on-behalf-of-user API scopes that let the agent reach each type with the caller's identity
API_SCOPES = {"serving_endpoint": ("serving.serving-endpoints",),
              "vector_search_index": ("vectorsearch.vector-search-indexes",),
              "function": ("catalog.functions",), "genie_space": ("dashboards.genie",),
              "sql_warehouse": ("sql.warehouses", "sql.statement-execution"), "table": ("catalog.tables",),
              "uc_connection": ("catalog.connections",)}
_PART = r"(?:`[^`]+`|[^.`\s*]+|\*)"
_UC3 = re.compile(rf"{_PART}\.{_PART}\.{_PART}")
FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "serving_endpoint": (re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}"), "letters, digits, '-' and '_'"),
    "vector_search_index": (_UC3, "catalog.schema.index"),
    "function": (_UC3, "catalog.schema.function"),
    "table": (_UC3, "catalog.schema.table"),
    "genie_space": (re.compile(r"[0-9a-f]{32}"), "a Genie space id: 32 hex digits"),
    "sql_warehouse": (re.compile(r"[0-9a-f]{16}"), "a warehouse id: 16 hex digits"),
    "uc_connection": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*"), "letters, digits, '-' and '_'"),
    "app": (re.compile(r"[a-z0-9][a-z0-9-]{0,29}"), "an app name: lowercase letters, digits and '-'"),
    "lakebase": (re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}"), "a database instance name: letters, digits, '-'"),
    "uc_model_service": (re.compile(r"[^\s]+"), "a name without spaces"),
}
SECRET_VALUES = [("a Databricks personal access token", re.compile(r"\bdapi[0-9a-f]{32}(?:-\d+)?\b")),
                 ("an OpenAI-style key", re.compile(r"\bsk-(?:proj-|svcacct-)?[A-Za-z0-9_\-]{20,}"))]
SECRET_NAME = re.compile(r"(?:^|_)(?:api_?key|token|secret|password|client_secret)$", re.IGNORECASE)
UC_TYPES = ("vector_search_index", "function", "table", "uc_connection")
# import name -> distribution, where they differ
DISTRIBUTIONS = {"databricks_langchain": "databricks-langchain", "databricks_openai": "databricks-openai",
                 "unitycatalog": "unitycatalog-ai", "langchain_core": "langchain-core",
                 "langchain_community": "langchain-community", "langchain_openai": "langchain-openai",
                 "yaml": "pyyaml", "databricks_ai_bridge": "databricks-ai-bridge", "sklearn": "scikit-learn"}
MLMODEL_SKIP = {".git", ".venv", "venv", "__pycache__", "node_modules", ".llmops", "mlruns"}
# checked with ast; the agent is never imported
AGENT_RULES = rule_table(
    Rule("agent-code-missing", ERROR, "mlflow_agent.code names a file that does not exist"),
    Rule("agent-syntax", ERROR, "the agent's code file does not parse"),
    Rule("agent-set-model-missing", ERROR, "the agent's code never calls mlflow.models.set_model(...)"),
    Rule("agent-interface-mismatch", ERROR, "the object given to set_model is not a ResponsesAgent (interface: "
                                            "responses) or ChatAgent (interface: chat)"),
    Rule("agent-interface-unchecked", WARNING, "the object given to set_model cannot be followed to its class"),
    Rule("agent-requirements-missing", WARNING, "mlflow_agent has no pip_requirements (logging would infer them "
                                                "in a subprocess) or misses a package the code imports"),
    Rule("resource-undeclared", ERROR, "the agent uses a Databricks resource (endpoint, index, function, Genie "
                                       "space, warehouse, table, connection) that mlflow_agent does not declare"),
    Rule("resource-unused", WARNING, "a declared resource that the agent's code never uses"),
    Rule("resource-unresolved", WARNING, "a resource name that depends on an environment variable or argument, "
                                         "so it cannot be checked statically"),
    Rule("resource-wildcard", WARNING, "a wildcard (catalog.schema.*): serving grants only the names declared"),
    Rule("resource-name-invalid", ERROR, "a resource name not in its format (three-part catalog.schema.name for "
                                         "indexes, functions and tables)"),
    Rule("resource-scope-missing", ERROR, "an on-behalf-of-user resource without the API scope it needs "
                                          "(auth_policy.api_scopes)"),
    Rule("mlmodel-resources-differ", ERROR, "a logged MLmodel whose resources differ from mlflow_agent's"),
)


def norm(rtype: str, name: str) -> str:
    """How Databricks compares names: Unity Catalog names ignore case and backquotes."""
    return name.replace("`", "").lower() if rtype in UC_TYPES else name


def _covers(declared: str, used: str) -> bool:
    if declared.endswith(".*"):
        return used.startswith(declared[:-1])
    return declared == used


def agent_io(interface: str) -> tuple[dict[str, FlowInput], set[str]]:
    """The request fields a data line gives, and a line's outputs per interface (``output_text``: the final text,
    beside the response's own fields; see mlflow_runner.agent_outputs)."""
    if interface == "responses":
        return ({"input": FlowInput("input", "list", False),
                 "custom_inputs": FlowInput("custom_inputs", "object", True),
                 "context": FlowInput("context", "object", True)}, {"output_text", "output", "custom_outputs"})
    return ({"messages": FlowInput("messages", "list", False), "context": FlowInput("context", "object", True),
             "custom_inputs": FlowInput("custom_inputs", "object", True)},
            {"output_text", "messages", "custom_outputs"})


def inspect_agent(folder: Path, spec: MlflowAgentSpec, config_origin: Origin | None,
                  mlmodel: Path | None = None) -> FlowInfo:
    origin = config_origin or spec.origin
    inputs, outputs = agent_io(spec.interface)
    info = FlowInfo(kind=KIND, folder=folder, definition=spec.code, inputs=inputs, outputs=outputs, engine=KIND,
                    served_by=KIND)
    out = info.findings

    def config(sub: tuple[Any, ...], message: str, rule: str, at_key: bool = False) -> None:
        if origin is not None:
            out.append(from_problem(origin.problem(sub, message, rule, at_key=at_key)))
        else:
            out.append(finding(rule, "llmops.yaml", None, None, message))

    shown = display_path(spec.code)
    try:
        source = spec.code.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        missing = isinstance(exc, FileNotFoundError)
        config(("code",), f"mlflow_agent.code '{display_path(spec.code)}' "
               f"{'does not exist' if missing else f'cannot be read ({exc})'}; it is relative to the flow's "
               "path and names the file that calls mlflow.models.set_model", "agent-code-missing")
        info.loaded = False
        return info
    try:
        tree = ast.parse(source, filename=str(spec.code))
    except SyntaxError as exc:
        out.append(finding("agent-syntax", shown, exc.lineno, exc.offset, f"Python syntax error: {exc.msg}"))
        info.loaded = False
        return info
    code = scan(tree, spec.code.parent)
    out.extend(secret_findings(tree, shown))
    _check_model(code, spec, shown, out)
    _check_requirements(code, spec, folder, shown, config)
    _check_resources(code, spec, shown, out, config)
    for path in [mlmodel] if mlmodel is not None else _mlmodels(folder):
        out.extend(mlmodel_findings(path, spec))
    return info


def secret_findings(tree: ast.Module, shown: str) -> list[Finding]:
    """Literal credentials in the agent's code (a served model's code is readable by whoever can load it)."""
    out = []
    for node in ast.walk(tree):
        targets: list[tuple[str, ast.expr]] = []
        if isinstance(node, ast.keyword) and node.arg:
            targets.append((node.arg, node.value))
        elif isinstance(node, ast.Assign):
            targets += [(t.id, node.value) for t in node.targets if isinstance(t, ast.Name)]
        for name, value in targets:
            if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
                continue
            text = value.value
            what = next((w for w, pattern in SECRET_VALUES if pattern.search(text)), None)
            if what is None and SECRET_NAME.search(name) and len(text) >= 16 and " " not in text:
                what = "a literal credential"
            if what:
                out.append(finding("secret-literal", shown, value.lineno, value.col_offset + 1,
                                   f"'{name}' holds {what}; never commit credentials: remove it, rotate it, and read "
                                   "it from the environment (serving injects Databricks credentials itself)"))
    return out


def _check_model(code: AgentCode, spec: MlflowAgentSpec, shown: str, out: list[Finding]) -> None:
    want = INTERFACES[spec.interface]
    if code.set_model is None:
        out.append(finding("agent-set-model-missing", shown, 1, 1,
                           f"{shown} never calls mlflow.models.set_model(...); models-from-code logging needs it: "
                           f"end the file with mlflow.models.set_model(AGENT), AGENT an instance of your {want}"))
        return
    line, col = code.set_model.lineno, code.set_model.col_offset + 1
    cls = code.agent_class
    if cls is None or cls not in code.bases:
        what = f"an instance of '{cls}', which is not defined in this file" if cls else "something lint cannot follow"
        out.append(finding("agent-interface-unchecked", shown, line, col,
                           f"set_model is given {what}, so lint cannot check it is a {want} (interface: "
                           f"{spec.interface}); pass an instance of a class defined here"))
        return
    ancestors = code.ancestors(cls)
    if want in ancestors:
        return
    other = next((k for k, v in INTERFACES.items() if v in ancestors), None)
    hint = (f"it is a {INTERFACES[other]}: set 'interface: {other}' or subclass {want}" if other else
            f"subclass mlflow.pyfunc.{want}")
    out.append(finding("agent-interface-mismatch", shown, line, col,
                       f"set_model is given a {cls}, not a {want} as 'interface: {spec.interface}' says; {hint}"))


def _requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;@]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _check_requirements(code: AgentCode, spec: MlflowAgentSpec, folder: Path, shown: str, config: Any) -> None:
    if not spec.pip_requirements:
        config((), "mlflow_agent has no pip_requirements: logging would infer them by running the agent in a "
               "subprocess, and serving would install whatever that found; list them, e.g. [mlflow==3.17.2, openai]",
               "agent-requirements-missing", True)
        return
    have = {_requirement_name(r) for r in spec.pip_requirements}
    for module, line in sorted(code.imports.items(), key=lambda kv: kv[1]):
        if module in sys.stdlib_module_names or module == "__future__" or (folder / f"{module}.py").exists() or (
                spec.code.parent / f"{module}.py").exists() or (spec.code.parent / module).is_dir():
            continue
        dist = DISTRIBUTIONS.get(module, module.replace("_", "-").lower())
        if module == "mlflow":
            ok = bool(have & {"mlflow", "mlflow-skinny"})
        elif module == "databricks":
            ok = any(h.startswith("databricks-") for h in have)
        else:
            ok = dist in have or module.lower() in have
        if not ok:
            config(("pip_requirements",), f"{shown}:{line} imports {module}, which pip_requirements does not list; "
                   f"serving installs only what is listed: add {dist}", "agent-requirements-missing")


def _check_resources(code: AgentCode, spec: MlflowAgentSpec, shown: str, out: list[Finding], config: Any) -> None:
    block = "auth_policy.system_resources" if spec.auth_policy else "resources"
    declared: dict[str, list[AgentResource]] = {}
    for res in spec.resources:
        declared.setdefault(res.type, []).append(res)
        pattern, form = FORMATS[res.type]
        if not pattern.fullmatch(res.name):
            config(res.key, f"{LABELS[res.type]} '{res.name}' is not in its format ({form})", "resource-name-invalid")
        elif "*" in res.name:
            config(res.key, f"'{res.name}' is a wildcard: Databricks serving grants access only to the names "
                   f"declared; list each {LABELS[res.type]}", "resource-wildcard")
        # a type without a known scope (app, lakebase, uc_model_service) is left to the workspace to check
        if res.on_behalf_of_user and res.type in API_SCOPES and not set(API_SCOPES[res.type]) & set(spec.api_scopes):
            config(res.key, f"{LABELS[res.type]} '{res.name}' is used on behalf of the user, which needs the API "
                   f"scope {' and '.join(API_SCOPES[res.type])}: declare it under auth_policy: {{system_resources: "
                   "..., api_scopes: [...]}} instead of resources:", "resource-scope-missing")
    used: set[tuple[str, str]] = set()
    unresolved_types = {u.type for u in code.uses if u.name is None}
    for use in code.uses:
        if use.name is None:
            out.append(finding("resource-unresolved", shown, use.line, use.column,
                               f"{use.via}: the {LABELS[use.type]} depends on {use.why}, so lint cannot check it is "
                               f"declared; use a module constant, or make sure it names one of {block}.{use.type}"))
            continue
        _check_use(use, spec, declared.get(use.type, []), shown, out, used, block)
    for res in spec.resources:
        if (res.type, norm(res.type, res.name)) not in used and res.type not in unresolved_types:
            config(res.key, f"{LABELS[res.type]} '{res.name}' is declared but {shown} never uses it; remove it "
                   "(serving grants the agent access to it for nothing)", "resource-unused")


def _check_use(use: Use, spec: MlflowAgentSpec, declared: list[AgentResource], shown: str, out: list[Finding],
               used: set[tuple[str, str]], block: str) -> None:
    name = norm(use.type, use.name or "")
    label = LABELS[use.type]
    pattern, form = FORMATS[use.type]
    if not pattern.fullmatch(use.name or ""):
        out.append(finding("resource-name-invalid", shown, use.line, use.column,
                           f"{use.via} names {label} '{use.name}', which is not in its format ({form})"))
        return
    if "*" in name:
        matched = [d for d in declared if norm(d.type, d.name).startswith(name.rstrip("*"))]
        used.update((d.type, norm(d.type, d.name)) for d in matched)
        out.append(finding("resource-wildcard", shown, use.line, use.column,
                           f"{use.via} uses '{use.name}', a wildcard lint cannot expand; make sure {block}."
                           f"{use.type} lists every {label} it matches"
                           f" (it lists {len(matched)})"))
        return
    matches = [d for d in declared if _covers(norm(d.type, d.name), name)]
    if matches:
        used.update((d.type, norm(d.type, d.name)) for d in matches)
        return
    scopes = API_SCOPES.get(use.type, ())
    if spec.auth_policy and scopes and set(scopes) <= set(spec.api_scopes):
        return  # reached with the caller's identity (on behalf of user)
    best = closest(name, [norm(d.type, d.name) for d in declared])
    hint = f"; did you mean '{best}'?" if best else ""
    out.append(finding("resource-undeclared", shown, use.line, use.column,
                       f"{use.via} uses {label} '{use.name}', which mlflow_agent.{block}.{use.type} does not "
                       f"declare{hint}; deployed, the agent would fail with credential errors: add it"))


# --- a logged MLmodel ---------------------------------------------------------------------------------

def _mlmodels(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in MLMODEL_SKIP)
        if "MLmodel" in files:
            found.append(Path(root) / "MLmodel")
    return found


def mlmodel_resources(data: Any) -> tuple[set[tuple[str, str]], tuple[Any, ...]] | None:
    """(type, name) pairs an MLmodel declares, and the key they sit under; None when it declares none."""
    doc = as_dict(data)
    for key in (("resources",), ("auth_policy", "system_auth_policy", "resources")):
        block: Any = doc
        for part in key:
            block = as_dict(block).get(part)
        if isinstance(block, dict):
            pairs = set()
            for rtype, items in as_dict(block.get("databricks")).items():
                for item in as_list(items):
                    name = as_dict(item).get("name")
                    if isinstance(name, str):
                        pairs.add((str(rtype), norm(str(rtype), name)))
            return pairs, key
    return None


def mlmodel_findings(path: Path, spec: MlflowAgentSpec) -> list[Finding]:
    try:
        doc: YamlDoc = load_yaml(path)
    except ConfigError as exc:
        return [from_problem(p) for p in exc.problems]
    found = mlmodel_resources(doc.data)
    pairs, key = found if found is not None else (set(), ("resources",))
    want = {(r.type, norm(r.type, r.name)) for r in spec.resources}
    if pairs == want:
        return []
    extra, missing = sorted(pairs - want), sorted(want - pairs)
    parts = []
    if missing:
        parts.append("it lacks " + ", ".join(f"{t} {n}" for t, n in missing))
    if extra:
        parts.append("it has " + ", ".join(f"{t} {n}" for t, n in extra) + " that mlflow_agent does not declare")
    line, col = doc.key_pos(*key)
    return [finding("mlmodel-resources-differ", doc.display, line or 1, col,
                    f"this logged model's resources differ from mlflow_agent's: {'; '.join(parts)}; log it again "
                    "(llmops-ci register does) so serving grants what the code uses")]


# --- the kind -------------------------------------------------------------------------------------------

class MlflowAgentKind:
    """Declared by config (``mlflow_agent:``), never recognised from files: ``for_spec`` binds one flow's block."""

    name = KIND
    block = KIND
    block_schema = MLFLOW_AGENT
    excludes = ("run_file", "variant")

    def __init__(self, spec: MlflowAgentSpec | None = None, origin: Origin | None = None) -> None:
        self.spec, self.origin = spec, origin

    @classmethod
    def for_spec(cls, spec: MlflowAgentSpec, origin: Origin | None = None) -> MlflowAgentKind:
        return cls(spec, origin or spec.origin)

    def matches(self, path: Path) -> bool:
        return False

    def inspect(self, path: Path) -> FlowInfo:
        if self.spec is None:
            raise UsageError(f"{display_path(path)}: an MLflow agent is declared in llmops.yaml with an "
                             "'mlflow_agent:' block (code, interface, resources)")
        return inspect_agent(path, self.spec, self.origin)

    def snapshot(self, info: FlowInfo, dest: Path, *, variant: str | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> Snapshot:
        if variant or overrides:
            raise UsageError(f"{display_path(info.folder)}: an MLflow agent has no variants or node connections to "
                             "override; remove 'variant:' and 'connections:' from its flow entry")
        shutil.rmtree(dest, ignore_errors=True)
        copy_tree(info.folder, dest, ignore=shutil.ignore_patterns(*MLMODEL_SKIP, "*.pyc"))
        return Snapshot(dest, dest / info.definition.relative_to(info.folder))

    def rules(self) -> list[Rule]:
        return list(AGENT_RULES.values())

    def declare(self, path: Path, raw: Any, origin: Origin) -> MlflowAgentSpec | None:
        return agent_spec(path, raw, origin)

    def inspect_declared(self, path: Path, spec: MlflowAgentSpec) -> FlowInfo:
        return inspect_agent(path, spec, spec.origin)


def resources_for_mlflow(spec: MlflowAgentSpec) -> list[tuple[str, str, str, bool]]:
    """(class in mlflow.models.resources, argument, name, on_behalf_of_user) for each declared resource."""
    out = []
    for res in spec.resources:
        if res.type in AGENT_RESOURCE_TYPES:
            cls, arg = MLFLOW_RESOURCES[res.type]
            out.append((cls, arg, res.name, res.on_behalf_of_user))
    return out
