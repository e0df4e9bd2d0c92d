"""The schema of ``llmops.yaml`` and of the prompt flow ``run.yml`` files it points at (lint and every step check
a config with it). A config-declared kind (``mlflow_agent:``) brings its own block through the kinds registry."""

from __future__ import annotations

from typing import Any

from llmops_ci.core.errors import Problem
from llmops_ci.core.schema import (
    BOOL,
    FINITE,
    INT,
    REFUSED,
    SCALAR,
    STR,
    STR_MAP,
    AnyValue,
    ListOf,
    MapOf,
    OneOf,
    PathValue,
    Scalar,
    Spec,
    Struct,
)
from llmops_ci.core.yamldoc import Key, YamlDoc
from llmops_ci.kinds import declared_kinds

DEFAULT_CONFIG = "llmops.yaml"
FLOW_NAME = r"[a-z0-9][a-z0-9_-]*"
ENDPOINT_NAME = r"[A-Za-z][A-Za-z0-9_-]{0,62}"  # what Azure ML, Databricks and a folder name all accept
MODEL_NAME = r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,254}"  # Unity Catalog names are catalog.schema.model
MAX_REPEATS = 100
RUN_FIGURES = ("lines_failed", "lines_failed_ratio", "latency_p50", "latency_p95", "duration_s",
               "tokens_prompt", "tokens_completion", "tokens_total")

CONNECTION_FIELDS: dict[str, tuple[str, ...]] = {
    "open_ai": ("api_key", "base_url", "organization"),
    "azure_open_ai": ("api_key", "api_base", "api_type", "api_version", "auth_mode"),
    "custom": ("configs", "secrets"),
}
CONNECTION_REQUIRED = {"open_ai": ("api_key",), "azure_open_ai": ("api_base",), "custom": ()}


class _ConnectionSpec(Spec):
    def check(self, doc: YamlDoc, value: Any, path: Key, out: list[Problem]) -> Any:
        ctype = value.get("type") if isinstance(value, dict) else None
        if not isinstance(ctype, str) or ctype not in CONNECTION_FIELDS:  # a list or mapping is no type
            Struct({"type": Scalar((str,), choices=tuple(CONNECTION_FIELDS))}, required=("type",),
                   what="in a connection").check(doc, {"type": ctype} if isinstance(value, dict) else value,
                                                 path, out)
            return REFUSED
        fields: dict[str, Spec] = {"type": STR}
        for name in CONNECTION_FIELDS[ctype]:
            fields[name] = STR_MAP if name in ("configs", "secrets") else STR
        return Struct(fields, required=CONNECTION_REQUIRED[ctype], what=f"in a connection of type {ctype}").check(
            doc, value, path, out)


MAPPING = MapOf(SCALAR)
NODE_CONNECTIONS = MapOf(MapOf(Scalar((str, int, float, bool))))
PATH = PathValue()
PROBE = Struct({k: INT for k in ("initial_delay", "period", "timeout", "failure_threshold", "success_threshold")},
               what="in a probe (azure-ai-ml ProbeSettings, seconds)")
# deploy: keys read by one backend each (docs/azureml-runs.md, docs/mlflow-agents.md say which)
DEPLOY_CLOUD_KEYS: dict[str, Any] = {
    # Azure ML managed online deployments
    "app_insights": BOOL, "max_concurrent_requests": INT, "worker_num": INT,
    "identity": Struct({"type": Scalar((str,), choices=("system_assigned", "user_assigned")), "resource_id": STR,
                        "client_id": STR}, required=("type",), what="in identity"),
    "worker_threads": INT, "probes": Struct({"liveness": PROBE, "readiness": PROBE}, what="in probes"),
    # Databricks model serving, with databricks-agents' deploy() defaults
    "scale_to_zero": BOOL, "tracing": BOOL, "inference_table": BOOL, "experiment_id": STR,
    "keep_previous": INT, "instance_profile_arn": STR,
}
GATE_RULE = Struct({"min": FINITE, "max": FINITE, "max_drop": FINITE, "max_rise": FINITE, "significant": BOOL,
                    "against": Scalar((str,), pattern=FLOW_NAME, hint=": name a flow of this config"),
                    "test": Scalar((str,), choices=("non_inferiority",))},
                   what="in a gate rule", exclusive=(("significant", "test"),))
# an evaluation is an evaluation flow (path:), an azure-ai-evaluation evaluator or an MLflow 3 scorer (module:attr)
EVALUATOR_REF = Scalar((str,), pattern=r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*",
                       hint=": write module:Class or module:function, e.g. azure.ai.evaluation:F1ScoreEvaluator")
DATA_REF = Scalar((str,), pattern=r"\$\{data\.[^{}\s]+\}",
                  hint=": write ${data.<column>}, a column of the flow's data")
EVALUATION = Struct({"path": PATH, "data": PATH, "column_mapping": MAPPING, "connections": NODE_CONNECTIONS,
                     "environment_variables": STR_MAP, "scores": MapOf(STR), "init": MapOf(AnyValue()),
                     "evaluator": EVALUATOR_REF, "scorer": EVALUATOR_REF},
                    what="in an evaluation", exclusive=(("path", "evaluator", "scorer"),))
PARITY = Struct({"of": Scalar((str,), pattern=FLOW_NAME, hint=": name a flow of this config"),
                 "outputs": MapOf(STR), "method": STR},
                required=("of", "outputs"), what="in parity")
_FLOW_FIELDS: dict[str, Spec] = {
    "path": PATH, "data": PATH, "column_mapping": MAPPING, "variant": STR, "connections": NODE_CONNECTIONS,
    "environment_variables": STR_MAP, "max_failed_lines": Scalar((int,)), "run_file": PATH,
    "resources": Struct({"instance_type": STR, "compute": STR}, what="in resources"),
    "init": MapOf(AnyValue()),  # a flex class entry's __init__ arguments, as run.yml's init
    "evaluations": MapOf(EVALUATION, key_pattern=FLOW_NAME,
                         key_hint=": use lowercase letters, digits, '-' and '_'"),
    "gate": MapOf(GATE_RULE, key_pattern=r"[^.\s]+\.[^\s]+", key_hint=": write '<evaluation>.<metric>'"),
    "register": Struct({"name": Scalar((str,), pattern=MODEL_NAME, hint=": a model name is letters, digits, "
                                       "'.', '-' and '_' (on Databricks: catalog.schema.model)"),
                        "description": STR, "tags": STR_MAP}, what="in register"),
    "deploy": Struct({"endpoint": Scalar((str,), pattern=ENDPOINT_NAME, hint=": an endpoint name starts with "
                                         "a letter and has up to 63 letters, digits, '-' and '_'"),
                      "instance_type": STR, "instance_count": INT,
                      "traffic": ListOf(INT), "smoke_tests": PATH, "environment_variables": STR_MAP,
                      "request_timeout_ms": INT, **DEPLOY_CLOUD_KEYS},
                     required=("endpoint",), what="in deploy"),
    "parity": PARITY,  # compare this flow's outputs with another flow's on the same lines
    "line_key": DATA_REF, "cluster": DATA_REF,  # verdict statistics: see docs/gate.md
    "gate_family": Scalar((str,), choices=("holm", "none")),
    "repeats": Scalar((int,)),  # each data line runs this many times; its score is the mean
}
_FLOW_EXCLUSIVE = (("run_file", "path"), ("run_file", "data"), ("run_file", "column_mapping"))


def flow_schema() -> Struct:
    """A flow entry, with the block of every config-declared kind (blocks exclude each other: a flow has one
    kind)."""
    fields = dict(_FLOW_FIELDS)
    exclusive = list(_FLOW_EXCLUSIVE)
    declared = list(declared_kinds().items())
    for i, (block, kind) in enumerate(declared):
        fields[block] = kind.block_schema
        exclusive += [(earlier, block) for earlier, _ in declared[:i]]
        exclusive += [(key, block) for key in kind.excludes]
    return Struct(fields, what="in a flow", exclusive=tuple(exclusive))


def config_schema() -> Struct:
    """llmops.yaml as the kinds registry has it now (a kind registered later adds its block)."""
    return Struct(
        {
            "version": Scalar((int,), choices=(1,)),
            "connections": MapOf(_ConnectionSpec()),
            "flows": MapOf(flow_schema(), key_pattern=FLOW_NAME,
                           key_hint=": use lowercase letters, digits, '-' and '_'"),
            "llm_cache": Struct({"mode": Scalar((str,), choices=("off", "record", "replay", "auto")), "dir": PATH},
                                what="in llm_cache"),
            "azureml": Struct({"subscription_id": STR, "resource_group": STR, "workspace": STR},
                              required=("subscription_id", "resource_group", "workspace"), what="in azureml"),
            "databricks": Struct({"host": STR}, required=("host",), what="in databricks"),
        },
        required=("version", "flows"), what="at the top of llmops.yaml",
    )


CONFIG = config_schema()
# run.yml settings pfazure passes to the service besides flow, data and mappings (promptflow's Run._to_rest_object)
RUN_DETAILS = ("display_name", "description", "tags", "runtime", "identity")
RUN_YML = Struct(
    {
        "$schema": STR, "name": STR, "display_name": STR, "description": STR, "tags": STR_MAP,
        "properties": STR_MAP, "flow": PATH, "data": PATH, "run": STR, "column_mapping": MAPPING, "variant": STR,
        "connections": NODE_CONNECTIONS, "runtime": STR, "resources": MapOf(AnyValue()),
        # promptflow's RunSchema: ManagedIdentitySchema or UserIdentitySchema
        "identity": Struct({"type": Scalar((str,), choices=("managed", "user_identity")), "client_id": STR},
                           required=("type",), what="in identity (Run.schema.json)"),
        "init": AnyValue(),
        "environment_variables": OneOf((STR_MAP, STR), "a mapping of names to values, or a path to a .env file"),
    },
    required=("flow",), what="in a run.yml (see Run.schema.json)",
)
