"""The files a DAG flow depends on besides its folder, and its private runnable copy (includes merged,
connection overrides and the variant applied)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from llmops_ci.core.safe_copy import copy_file, copy_tree, require_inside
from llmops_ci.core.schema import as_dict, as_list
from llmops_ci.core.yamldoc import YamlDoc
from llmops_ci.kinds.base import Dependency

DAG_FILE = "flow.dag.yaml"

def _norm(folder: Path, rel: str) -> Path:
    return Path(os.path.normpath(folder.absolute() / rel))


def dependencies(folder: Path, data: dict[str, Any], doc: YamlDoc | None = None) -> list[Dependency]:
    """additional_includes and the requirements file (also where prompt flow finds it through a folder include)."""
    includes = [inc for inc in as_list(data.get("additional_includes")) if isinstance(inc, str) and inc]

    def at(*key: Any) -> dict[str, Any]:
        if doc is None:
            return {}
        line, column = doc.pos(*key)
        return {"source": doc.display, "line": line, "column": column}

    env = data.get("environment")
    req = env.get("python_requirements_txt") if isinstance(env, dict) else None
    deps: list[Dependency] = []
    if isinstance(req, str) and req:
        deps.append(Dependency(_norm(folder, req), "python_requirements_txt",
                               **at("environment", "python_requirements_txt")))
        first = Path(req).parts[0] if Path(req).parts else ""
        for inc in includes:
            src = _norm(folder, inc)
            if src.name == first:
                deps.append(Dependency(_norm(src.parent, req), "python_requirements_txt",
                                       **at("environment", "python_requirements_txt")))
    all_includes = as_list(data.get("additional_includes"))
    deps += [Dependency(_norm(folder, inc), "additional include", **at("additional_includes", all_includes.index(inc)))
             for inc in includes]
    return deps


_COPY_IGNORE = shutil.ignore_patterns("__pycache__", ".promptflow", ".runs")


def copy_flow(flow: Path, dest: Path, overrides: dict[str, dict[str, Any]] | None = None,
              variant: str | None = None, definition: str = DAG_FILE) -> Path:
    """``flow`` copied to ``dest`` with additional_includes merged in and connection overrides applied;
    ``variant`` (``${node.variant_id}``) becomes that node's default, so the copy runs (or serves) it."""
    if dest.exists():
        shutil.rmtree(dest)
    copy_tree(flow, dest, ignore=_COPY_IGNORE)
    dag_path = dest / definition
    if not dag_path.exists():
        return dest
    dag = as_dict(yaml.safe_load(dag_path.read_text(encoding="utf-8")))
    includes = as_list(dag.pop("additional_includes", None))
    for inc in includes:
        require_inside(flow / inc, "additional include", flow)
        src = (flow / inc).resolve()
        target = dest / src.name
        if src.is_dir():
            copy_tree(src, target, dirs_exist_ok=True, ignore=_COPY_IGNORE)
        elif src.is_file():
            copy_file(src, target)
    if overrides:
        _apply_overrides(dag, overrides)
    node, _, variant_id = (variant or "").strip("${}").partition(".")
    chosen = as_dict(as_dict(dag.get("node_variants")).get(node))
    if variant_id and variant_id in as_dict(chosen.get("variants")):
        chosen["default_variant_id"] = variant_id
    if includes or overrides or variant_id:
        dag_path.write_text(yaml.safe_dump(dag, sort_keys=False), encoding="utf-8")
    return dest


def _apply_overrides(dag: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> None:
    bodies = [n for n in as_list(dag.get("nodes")) if isinstance(n, dict)]
    for name, spec in as_dict(dag.get("node_variants")).items():
        for variant in as_dict(as_dict(spec).get("variants")).values():
            node = as_dict(variant).get("node")
            if isinstance(node, dict):
                bodies.append({**node, "name": name, "_ref": node})
    for body in bodies:
        values = overrides.get(str(body.get("name")))
        if not values:
            continue
        target = body.pop("_ref", body)
        for key, value in values.items():
            if key == "connection" and target.get("type") == "llm":
                target["connection"] = value
            else:
                target.setdefault("inputs", {})[key] = value
