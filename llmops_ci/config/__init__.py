"""``llmops.yaml`` (and the prompt flow ``run.yml`` files it points at) as typed values.

``schema`` checks the files, ``flows`` builds each flow entry, ``model`` holds the values; this module reads a
config and names what the steps use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from llmops_ci.config.env import ENV_REF, connection_fields, connection_ref, connection_value, env_problems, expand_env
from llmops_ci.config.flows import build_flow
from llmops_ci.config.model import (
    AZUREML_MAX_REQUEST_TIMEOUT_MS,
    AzureML,
    Config,
    Connection,
    DatabricksConfig,
    DeploySpec,
    Evaluation,
    FlowSpec,
    GateRule,
    LlmCacheConfig,
    ParitySpec,
    RegisterSpec,
)
from llmops_ci.config.paths import inside_project, outside_tree, rel
from llmops_ci.config.schema import (
    CONFIG,
    CONNECTION_FIELDS,
    DEFAULT_CONFIG,
    RUN_FIGURES,
    RUN_YML,
    config_schema,
)
from llmops_ci.core.errors import ConfigError, Problem
from llmops_ci.core.yamldoc import YamlDoc, load_yaml
from llmops_ci.diagnostics.origin import Origin

__all__ = [
    "AZUREML_MAX_REQUEST_TIMEOUT_MS", "CONFIG", "CONNECTION_FIELDS", "DEFAULT_CONFIG", "ENV_REF", "RUN_FIGURES",
    "RUN_YML", "AzureML", "Config", "Connection", "DatabricksConfig", "DeploySpec", "Evaluation", "FlowSpec",
    "GateRule", "LlmCacheConfig", "ParitySpec", "RegisterSpec", "connection_fields", "connection_ref",
    "connection_value", "env_problems", "expand_env", "inside_project", "load_config", "not_a_config", "read_config",
]


def not_a_config(path: Path) -> str:
    """Why ``path`` (not a regular file) cannot be read as llmops.yaml, in a few words."""
    if path.is_dir():
        return "a folder, not a config file"
    return "not a regular file" if path.exists() else "config file not found"


def read_config(path: Path, environ: Mapping[str, str] | None) -> tuple[Config | None, list[Problem]]:
    """Best-effort load: the config built from every valid part, and every problem found.

    ``environ=None`` leaves ``${env:...}`` unresolved (lint); otherwise unset names are problems.
    """
    path = Path(path).absolute()
    try:
        doc = load_yaml(path)
    except ConfigError as exc:
        return None, exc.problems
    problems = list(doc.duplicates)
    if not isinstance(doc.data, dict):
        problems.append(doc.problem((), "llmops.yaml must be a mapping with 'version: 1' and 'flows:'",
                                    "wrong-type"))
        return None, problems
    checked = config_schema().check(doc, doc.data, (), problems)
    problems += env_problems(doc, environ)
    data = expand_env(checked, environ) if environ is not None else checked
    root = path.parent
    connections = {str(name): Connection(str(name), raw["type"], {k: v for k, v in raw.items() if k != "type"})
                   for name, raw in data.get("connections", {}).items()}
    flows: dict[str, FlowSpec] = {}
    run_docs: list[YamlDoc] = []
    for name, entry in data.get("flows", {}).items():
        flow, flow_problems, run_doc = build_flow(str(name), entry, doc.data["flows"][name], doc, root)
        problems += flow_problems
        if run_doc is not None:
            run_docs.append(run_doc)
        if flow is not None:
            flows[str(name)] = flow
    azure = data.get("azureml", {})
    azureml = None
    if all(k in azure for k in ("subscription_id", "resource_group", "workspace")):
        azureml = AzureML(azure["subscription_id"], azure["resource_group"], azure["workspace"])
    version = data.get("version", 1)
    cache = data.get("llm_cache", {})
    cache_dir = rel(root, cache["dir"]) if "dir" in cache else None
    if cache_dir is not None:
        cache_origin = Origin(doc, ("llm_cache",))
        problems += outside_tree(root, cache_origin, ("dir",), cache_dir)
        if cache_dir.exists() and not cache_dir.is_dir():
            problems.append(cache_origin.problem(("dir",), f"llm_cache.dir '{cache['dir']}' is a file; it must be "
                                                 "a folder (cassettes are written there, one file per flow)",
                                                 "wrong-type"))
    llm_cache = LlmCacheConfig(cache["mode"] if cache.get("mode") in ("off", "record", "replay", "auto") else "off",
                               cache_dir)
    host = data.get("databricks", {}).get("host")
    databricks = DatabricksConfig(host) if host is not None else None
    return Config(path, version, connections, flows, azureml, doc, tuple(run_docs), llm_cache,
                  databricks), problems


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """The config, or ConfigError listing every problem (exit 2). Resolves ``${env:...}`` from ``environ``."""
    config, problems = read_config(path, os.environ if environ is None else environ)
    if problems or config is None:
        raise ConfigError(problems)
    return config

