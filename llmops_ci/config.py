"""``llmops.yaml`` (and the prompt flow ``run.yml`` files it points at) as typed values."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_ci.core.child_env import ci_credential_refs, ci_token_message
from llmops_ci.core.errors import ConfigError, Problem, UsageError
from llmops_ci.core.schema import (
    BOOL,
    FINITE,
    INT,
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
    as_dict,
    did_you_mean,
    path_problem,
)
from llmops_ci.core.yamldoc import Key, YamlDoc, load_yaml

DEFAULT_CONFIG = "llmops.yaml"
FLOW_NAME = r"[a-z0-9][a-z0-9_-]*"
ENDPOINT_NAME = r"[A-Za-z][A-Za-z0-9_-]{0,62}"  # what Azure ML, Databricks and a folder name all accept
MODEL_NAME = r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,254}"  # Unity Catalog names are catalog.schema.model
ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_START = re.compile(r"\$\{\s*env\s*:")
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
    def check(self, doc: YamlDoc, value: Any, path: Key, out: list[Problem]) -> None:
        ctype = value.get("type") if isinstance(value, dict) else None
        if ctype not in CONNECTION_FIELDS:
            Struct({"type": Scalar((str,), choices=tuple(CONNECTION_FIELDS))}, required=("type",),
                   what="in a connection").check(doc, {"type": ctype} if isinstance(value, dict) else value,
                                                 path, out)
            return
        fields: dict[str, Spec] = {"type": STR}
        for name in CONNECTION_FIELDS[ctype]:
            fields[name] = STR_MAP if name in ("configs", "secrets") else STR
        Struct(fields, required=CONNECTION_REQUIRED[ctype], what=f"in a connection of type {ctype}").check(
            doc, value, path, out)


MAPPING = MapOf(SCALAR)
NODE_CONNECTIONS = MapOf(MapOf(Scalar((str, int, float, bool))))
PATH = PathValue()
AGENT_RESOURCE_TYPES = ("serving_endpoint", "vector_search_index", "function", "genie_space", "sql_warehouse", "table",
                        "uc_connection", "app", "lakebase", "uc_model_service")
AGENT_RESOURCE = OneOf((STR, Struct({"name": STR, "on_behalf_of_user": BOOL}, required=("name",),
                                    what="in a resource")),
                       "a name, or {name: ..., on_behalf_of_user: true}")
AGENT_RESOURCES = Struct({t: ListOf(AGENT_RESOURCE) for t in AGENT_RESOURCE_TYPES}, what="in resources")
MLFLOW_AGENT = Struct(
    {"code": PATH, "interface": Scalar((str,), choices=("responses", "chat")), "resources": AGENT_RESOURCES,
     "pip_requirements": ListOf(STR),
     "auth_policy": Struct({"system_resources": AGENT_RESOURCES, "api_scopes": ListOf(STR)},
                           what="in auth_policy")},
    required=("code", "interface"), what="in mlflow_agent", exclusive=(("resources", "auth_policy"),))
# a Microsoft Agent Framework flow: a Python entry (file.py:create_workflow or file.py:agent) and/or the file whose
# functions a declarative agent's `kind: function` tools bind to
AGENT_FRAMEWORK = Struct({"entry": Scalar((str,), pattern=r"[^:\s]+\.py:[A-Za-z_][A-Za-z0-9_]*",
                                          hint=": write '<file>.py:<function or object>', e.g. "
                                               "workflow.py:create_workflow"),
                          "bindings": PATH}, what="in agent_framework")
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
FLOW = Struct(
    {
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
        "mlflow_agent": MLFLOW_AGENT,
        "parity": PARITY,  # compare this flow's outputs with another flow's on the same lines
        "line_key": DATA_REF, "cluster": DATA_REF,  # verdict statistics: see docs/gate.md
        "gate_family": Scalar((str,), choices=("holm", "none")),
        "repeats": Scalar((int,)),  # each data line runs this many times; its score is the mean
        "agent_framework": AGENT_FRAMEWORK,
    },
    what="in a flow", exclusive=(("run_file", "path"), ("run_file", "data"), ("run_file", "column_mapping"),
                                 ("run_file", "mlflow_agent"), ("variant", "mlflow_agent"),
                                 ("mlflow_agent", "agent_framework"), ("variant", "agent_framework")),
)
CONFIG = Struct(
    {
        "version": Scalar((int,), choices=(1,)),
        "connections": MapOf(_ConnectionSpec()),
        "flows": MapOf(FLOW, key_pattern=FLOW_NAME, key_hint=": use lowercase letters, digits, '-' and '_'"),
        "llm_cache": Struct({"mode": Scalar((str,), choices=("off", "record", "replay", "auto")), "dir": PATH},
                            what="in llm_cache"),
        "azureml": Struct({"subscription_id": STR, "resource_group": STR, "workspace": STR},
                          required=("subscription_id", "resource_group", "workspace"), what="in azureml"),
        "databricks": Struct({"host": STR}, required=("host",), what="in databricks"),
    },
    required=("version", "flows"), what="at the top of llmops.yaml",
)
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


@dataclass(frozen=True)
class Origin:
    """Where a group of settings was written, so later checks can point at the exact line."""

    doc: YamlDoc
    prefix: Key = ()
    renames: tuple[tuple[str, str], ...] = ()

    def problem(self, sub: Key, message: str, rule: str, *, at_key: bool = False) -> Problem:
        names = dict(self.renames)
        if sub and isinstance(sub[0], str):
            sub = (names.get(sub[0], sub[0]), *sub[1:])
        return self.doc.problem((*self.prefix, *sub), message, rule, at_key=at_key)


@dataclass(frozen=True)
class Connection:
    name: str
    type: str
    values: dict[str, Any]


@dataclass(frozen=True)
class GateRule:
    metric: str
    min: float | None = None
    max: float | None = None
    max_drop: float | None = None
    max_rise: float | None = None
    significant: bool = False
    against: str | None = None  # compare with this flow's value in the same run instead of the baseline
    test: str | None = None  # "non_inferiority": pass only when the data shows the drop is within the limit


@dataclass(frozen=True)
class Evaluation:
    name: str
    path: Path
    data: Path | None
    column_mapping: dict[str, Any]
    connections: dict[str, dict[str, Any]]
    environment_variables: dict[str, Any]
    origin: Origin = field(repr=False, compare=False)
    scores: dict[str, str] = field(default_factory=dict)  # metric -> the per-line output behind it
    init: dict[str, Any] = field(default_factory=dict)  # a flex class entry's __init__ arguments
    evaluator: str | None = None  # module:attr of an azure-ai-evaluation style evaluator (then ``path`` is unused)
    scorer: str | None = None  # module:attr of an MLflow 3 scorer

    @property
    def ref(self) -> str | None:
        """``module:attr`` of an evaluator or scorer evaluation; None for an evaluation flow."""
        return self.evaluator or self.scorer


@dataclass(frozen=True)
class ParitySpec:
    of: str  # the flow this one is compared with
    outputs: dict[str, str]  # this flow's output -> the other flow's output
    method: str = "exact"  # exact | normalized | the name of one of this flow's evaluations
    origin: Origin | None = field(default=None, repr=False, compare=False)  # at flows.<name>.parity


@dataclass(frozen=True)
class RegisterSpec:
    name: str | None
    description: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeploySpec:
    endpoint: str
    instance_type: str | None = None
    instance_count: int = 1
    traffic: tuple[int, ...] = (100,)
    smoke_tests: str | None = None
    environment_variables: dict[str, Any] = field(default_factory=dict)
    request_timeout_ms: int | None = None
    # Azure ML: app insights on by default (tracing and metrics need it); the endpoint's identity (system or
    # user assigned); worker_* become PROMPTFLOW_WORKER_NUM / PROMPTFLOW_WORKER_THREADS
    app_insights: bool = True
    max_concurrent_requests: int | None = None
    identity: dict[str, str] = field(default_factory=dict)  # type, resource_id, client_id (user_assigned)
    worker_num: int | None = None
    worker_threads: int | None = None
    probes: dict[str, dict[str, int]] = field(default_factory=dict)  # liveness/readiness -> ProbeSettings
    # Databricks, as databricks-agents' deploy(): no scale to zero, tracing env, an AI Gateway inference table
    scale_to_zero: bool = False
    tracing: bool = True
    inference_table: bool = True
    experiment_id: str | None = None
    keep_previous: int = 0  # earlier versions kept on the endpoint at 0 % (the endpoint holds at most 15)
    instance_profile_arn: str | None = None


AZUREML_MAX_REQUEST_TIMEOUT_MS = 180_000  # the managed online deployment limit (request_settings reference)
MAX_SERVED_ENTITIES = 15  # Databricks: served entities per endpoint


@dataclass(frozen=True)
class AgentResource:
    """A Databricks resource the agent may use; ``type`` is a key of ``resources:`` (serving_endpoint, ...)."""

    type: str
    name: str
    on_behalf_of_user: bool = False
    key: Key = field(default=(), repr=False, compare=False)  # where in mlflow_agent: it is written


@dataclass(frozen=True)
class MlflowAgentSpec:
    code: Path  # absolute: the file that calls mlflow.models.set_model
    interface: str  # responses | chat
    resources: tuple[AgentResource, ...]
    pip_requirements: tuple[str, ...]
    auth_policy: bool = False  # resources came from auth_policy.system_resources
    api_scopes: tuple[str, ...] = ()
    origin: Origin | None = field(default=None, repr=False, compare=False)  # at flows.<name>.mlflow_agent


@dataclass(frozen=True)
class AgentFrameworkSpec:
    code: Path | None  # absolute: the Python entry file (None: a declarative file flow)
    attr: str  # the factory or object in it
    bindings: Path | None = None  # absolute: the functions a declarative agent's tools bind to
    origin: Origin | None = field(default=None, repr=False, compare=False)  # at flows.<name>.agent_framework


@dataclass(frozen=True)
class FlowSpec:
    name: str
    path: Path
    data: Path | None
    column_mapping: dict[str, Any]
    variant: str | None
    connections: dict[str, dict[str, Any]]
    environment_variables: dict[str, Any]
    max_failed_lines: int
    evaluations: dict[str, Evaluation]
    gate: dict[str, GateRule]
    register: RegisterSpec | None
    deploy: DeploySpec | None
    run_file: Path | None
    base_run: str | None
    resources: dict[str, Any]
    origin: Origin = field(repr=False, compare=False)
    run_origin: Origin | None = field(default=None, repr=False, compare=False)
    mlflow_agent: MlflowAgentSpec | None = None
    init: dict[str, Any] = field(default_factory=dict)  # a flex class entry's __init__ arguments
    parity: ParitySpec | None = None
    run_details: dict[str, Any] = field(default_factory=dict)  # a run.yml's RUN_DETAILS, as written
    line_key: str | None = None  # ${data.<column>} that pairs baseline and current lines (default: mapped inputs)
    cluster: str | None = None  # ${data.<column>}: lines sharing a value are one unit for intervals and verdicts
    gate_family: str = "holm"  # how the flow's paired verdicts are corrected for many metrics: holm | none
    repeats: int = 1  # each data line runs this many times (its evaluations score every repeat)
    agent_framework: AgentFrameworkSpec | None = None

    def where(self, *sub: Any) -> Origin:
        """The file that holds a setting: llmops.yaml when written there, else the flow's run.yml."""
        if self.run_origin is None or (*self.origin.prefix, *sub) in self.origin.doc.keys:
            return self.origin
        return self.run_origin


@dataclass(frozen=True)
class AzureML:
    subscription_id: str
    resource_group: str
    workspace: str


@dataclass(frozen=True)
class DatabricksConfig:
    host: str


@dataclass(frozen=True)
class LlmCacheConfig:
    mode: str = "off"
    dir: Path | None = None  # default: <config dir>/cassettes


@dataclass(frozen=True)
class Config:
    path: Path
    version: int
    connections: dict[str, Connection]
    flows: dict[str, FlowSpec]
    azureml: AzureML | None
    doc: YamlDoc = field(repr=False, compare=False)
    run_docs: tuple[YamlDoc, ...] = field(default=(), repr=False, compare=False)
    llm_cache: LlmCacheConfig = field(default_factory=LlmCacheConfig)
    databricks: DatabricksConfig | None = None

    @property
    def cassettes(self) -> Path:
        return self.llm_cache.dir or self.root / "cassettes"

    @property
    def root(self) -> Path:
        return self.path.parent

    def select(self, names: list[str] | None) -> list[FlowSpec]:
        """The flows named on the command line (all when none), or a usage error naming the valid ones."""
        if not names:
            return list(self.flows.values())
        unknown = [n for n in names if n not in self.flows]
        if unknown:
            raise UsageError(f"--flow {unknown[0]}: no such flow in {self.doc.display}; "
                             f"{did_you_mean(unknown[0], self.flows)}")
        return [self.flows[n] for n in names]


# --- ${env:NAME} ---------------------------------------------------------------------------------

def env_problems(doc: YamlDoc, environ: Mapping[str, str] | None) -> list[Problem]:
    """Malformed ``${env:...}`` everywhere; unset variables too unless ``environ`` is None (lint)."""
    out: list[Problem] = []

    def walk(value: Any, path: Key) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*path, i))
        elif isinstance(value, str) and "${" in value:
            stripped = ENV_REF.sub("", value)
            if _ENV_START.search(stripped):
                out.append(doc.problem(path, "malformed environment reference; write ${env:NAME} with NAME made "
                                       "of letters, digits and '_'", "env-syntax"))
            for name in ci_credential_refs(value):
                out.append(doc.problem(path, ci_token_message(name), "ci-token-ref"))
            if environ is not None:
                for name in ENV_REF.findall(value):
                    if name not in environ:
                        out.append(doc.problem(path, f"environment variable {name} is not set; export {name} "
                                               "(or set it as a CI secret/variable) and run again", "env-unset"))

    walk(doc.data, ())
    return out


def expand_env(value: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return ENV_REF.sub(lambda m: environ.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {k: expand_env(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, environ) for v in value]
    return value


# --- loading ---------------------------------------------------------------------------------------

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
    CONFIG.check(doc, doc.data, (), problems)
    problems += env_problems(doc, environ)
    data = expand_env(doc.data, environ) if environ is not None else doc.data
    root = path.parent
    connections = {}
    for name, raw in as_dict(data.get("connections")).items():
        if isinstance(raw, dict) and raw.get("type") in CONNECTION_FIELDS:
            connections[str(name)] = Connection(str(name), raw["type"], {k: v for k, v in raw.items() if k != "type"})
    flows: dict[str, FlowSpec] = {}
    run_docs: list[YamlDoc] = []
    for name, raw in as_dict(data.get("flows")).items():
        if not isinstance(raw, dict):
            continue
        flow, flow_problems, run_doc = _build_flow(str(name), raw, doc, root, environ)
        problems += flow_problems
        if run_doc is not None:
            run_docs.append(run_doc)
        if flow is not None:
            flows[str(name)] = flow
    azure = data.get("azureml")
    azureml = None
    if isinstance(azure, dict) and all(isinstance(azure.get(k), str)
                                       for k in ("subscription_id", "resource_group", "workspace")):
        azureml = AzureML(azure["subscription_id"], azure["resource_group"], azure["workspace"])
    version = data["version"] if isinstance(data.get("version"), int) else 1
    cache = as_dict(data.get("llm_cache"))
    cache_dir = _rel(root, cache.get("dir"))
    if cache_dir is not None:
        cache_origin = Origin(doc, ("llm_cache",))
        problems += _outside(root, cache_origin, ("dir",), cache_dir)
        if cache_dir.exists() and not cache_dir.is_dir():
            problems.append(cache_origin.problem(("dir",), f"llm_cache.dir '{cache['dir']}' is a file; it must be "
                                                 "a folder (cassettes are written there, one file per flow)",
                                                 "wrong-type"))
    llm_cache = LlmCacheConfig(cache["mode"] if cache.get("mode") in ("off", "record", "replay", "auto") else "off",
                               cache_dir)
    host = as_dict(data.get("databricks")).get("host")
    databricks = DatabricksConfig(host) if isinstance(host, str) else None
    return Config(path, version, connections, flows, azureml, doc, tuple(run_docs), llm_cache,
                  databricks), problems


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """The config, or ConfigError listing every problem (exit 2). Resolves ``${env:...}`` from ``environ``."""
    config, problems = read_config(path, os.environ if environ is None else environ)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _rel(root: Path, value: Any) -> Path | None:
    if not isinstance(value, str) or path_problem(value):  # the schema check says why
        return None
    return Path(os.path.normpath(root / value))


def _flow_dir(path: Path | None) -> Path | None:
    """A flow's folder: ``path:`` may name the folder or the definition file inside it (the kinds know which)."""
    if path is None:
        return None
    from llmops_ci.kinds import flow_folder

    return flow_folder(path)


def inside_project(root: Path, path: Path) -> bool:
    """Whether ``path`` (symlinks followed) is in the project folder ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def _outside(root: Path, origin: Origin, sub: Key, path: Path) -> list[Problem]:
    """A problem when ``path`` (symlinks followed) leads out of the project folder ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return [origin.problem(sub, f"'{os.path.relpath(path, root)}' leads out of the project folder "
                               f"{root} (the folder of llmops.yaml); keep flows, data, tests and cassettes inside "
                               "it", "path-outside")]
    except (OSError, RuntimeError) as exc:  # a symlink loop
        return [origin.problem(sub, f"cannot resolve '{path}': {exc}", "path-missing")]
    return []


def _build_flow(name: str, raw: dict[str, Any], doc: YamlDoc, root: Path,
                environ: Mapping[str, str] | None) -> tuple[FlowSpec | None, list[Problem], YamlDoc | None]:
    origin = Origin(doc, ("flows", name))
    problems: list[Problem] = []
    run: dict[str, Any] = {}
    run_root = root
    run_origin = None
    run_doc = None
    run_file = _rel(root, raw.get("run_file"))
    if run_file is not None:
        outside = _outside(root, origin, ("run_file",), run_file)
        if outside:
            return None, outside, None
        try:
            run_doc = load_yaml(run_file)
        except ConfigError as exc:
            problems += [p if p.rule != "path-missing" else origin.problem(
                ("run_file",), f"run_file '{raw['run_file']}' does not exist (paths are relative to "
                f"{doc.display})", "path-missing") for p in exc.problems]
            return None, problems, None
        problems += run_doc.duplicates
        if not isinstance(run_doc.data, dict):
            problems.append(run_doc.problem((), "a run.yml must be a mapping with at least 'flow:'", "wrong-type"))
            return None, problems, run_doc
        RUN_YML.check(run_doc, run_doc.data, (), problems)
        run = run_doc.data
        run_root = run_file.parent
        run_origin = Origin(run_doc, (), (("path", "flow"), ("base_run", "run")))
    elif "path" not in raw:
        problems.append(origin.problem((), f"flow '{name}' needs 'path:' (the flow's folder or file) "
                                       "or 'run_file:' (a prompt flow run.yml)", "missing-key", at_key=True))
        return None, problems, None
    source = run if run_file is not None else raw
    src_root = run_root if run_file is not None else root
    src_origin = run_origin if run_origin is not None else origin
    flow_path = _flow_dir(_rel(src_root, source.get("flow" if run_file is not None else "path")))
    if flow_path is None:  # not a string, or empty: the schema check has said so
        return None, problems, run_doc
    outside = _outside(root, src_origin, ("path",), flow_path)
    if outside:  # nothing outside the project is read, not even to lint it
        return None, problems + outside, run_doc
    data_path = _rel(src_root, source.get("data"))
    if data_path is not None:
        problems += _outside(root, src_origin, ("data",), data_path)
    connections: dict[str, dict[str, Any]] = {}
    for layer in (source.get("connections"), raw.get("connections")) if run_file is not None else (raw.get(
            "connections"),):
        for node, values in as_dict(layer).items():
            if isinstance(values, dict):
                connections.setdefault(str(node), {}).update(values)
    env_vars = dict(as_dict(source.get("environment_variables")))
    env_vars.update(as_dict(raw.get("environment_variables")))
    evaluations = {}
    for ename, eraw in as_dict(raw.get("evaluations")).items():
        ref_eval = _ref_evaluation(str(ename), eraw, Origin(doc, ("flows", name, "evaluations", str(ename))), root)
        if ref_eval is not None:
            problems += ref_eval[1]
            evaluations[str(ename)] = ref_eval[0]
            continue
        if isinstance(eraw, dict) and "path" not in eraw:
            problems.append(Origin(doc, ("flows", name, "evaluations", str(ename))).problem(
                (), f"evaluation '{ename}' needs 'path:' (an evaluation flow), 'evaluator:' (module:Class, e.g. "
                "azure.ai.evaluation:F1ScoreEvaluator) or 'scorer:' (an MLflow 3 scorer)", "missing-key",
                at_key=True))
            continue
        eval_path = _flow_dir(_rel(root, eraw.get("path"))) if isinstance(eraw, dict) else None
        if eval_path is not None:
            eval_origin = Origin(doc, ("flows", name, "evaluations", str(ename)))
            eval_data = _rel(root, eraw.get("data"))
            outside = _outside(root, eval_origin, ("path",), eval_path)
            problems += outside
            problems += _outside(root, eval_origin, ("data",), eval_data) if eval_data is not None else []
            if outside:
                continue
            evaluations[str(ename)] = Evaluation(
                str(ename), eval_path, eval_data,
                dict(as_dict(eraw.get("column_mapping"))),
                {str(k): dict(v) for k, v in as_dict(eraw.get("connections")).items() if isinstance(v, dict)},
                dict(as_dict(eraw.get("environment_variables"))),
                eval_origin,
                {str(k): v for k, v in as_dict(eraw.get("scores")).items() if isinstance(v, str)},
                dict(as_dict(eraw.get("init"))))
    gate = {}
    for metric, rule in as_dict(raw.get("gate")).items():
        if isinstance(rule, dict):
            gate[str(metric)] = GateRule(str(metric), _num(rule.get("min")), _num(rule.get("max")),
                                         _num(rule.get("max_drop")), _num(rule.get("max_rise")),
                                         rule.get("significant") is True,
                                         rule["against"] if isinstance(rule.get("against"), str) else None,
                                         test=rule["test"] if rule.get("test") == "non_inferiority" else None)
            if rule.get("test") == "non_inferiority" and rule.get("max_drop") is None \
                    and rule.get("max_rise") is None:
                problems.append(origin.problem(("gate", metric, "test"), "test: non_inferiority needs the limit "
                                               "it tests: add max_drop (or max_rise) to this rule", "missing-key"))
    reg = raw.get("register")
    register = RegisterSpec(reg.get("name") if isinstance(reg.get("name"), str) else None,
                            reg.get("description"), dict(as_dict(reg.get("tags")))) if isinstance(reg, dict) else None
    dep = raw.get("deploy")
    deploy = None
    if isinstance(dep, dict) and isinstance(dep.get("endpoint"), str):
        raw_traffic = dep.get("traffic", [100])
        traffic = tuple(t for t in raw_traffic if isinstance(t, int)) if isinstance(raw_traffic, list) else ()
        if isinstance(raw_traffic, list) and len(traffic) == len(raw_traffic):  # else the schema said why
            problems += _traffic_problems(origin, traffic)
        for key in ("instance_count", "request_timeout_ms", "max_concurrent_requests", "worker_num",
                    "worker_threads"):
            if isinstance(dep.get(key), int) and not isinstance(dep[key], bool) and dep[key] < 1:
                problems.append(origin.problem(("deploy", key), f"{key} must be 1 or more", "wrong-type"))
        problems += _deploy_limits(origin, dep)
        smoke = dep.get("smoke_tests") if isinstance(dep.get("smoke_tests"), str) else None
        if smoke is not None and smoke.strip():
            problems += _outside(root, origin, ("deploy", "smoke_tests"), Path(os.path.normpath(root / smoke)))
        deploy = DeploySpec(dep["endpoint"], dep.get("instance_type"),
                            dep["instance_count"] if isinstance(dep.get("instance_count"), int) else 1,
                            traffic or (100,), smoke,
                            dict(as_dict(dep.get("environment_variables"))),
                            dep["request_timeout_ms"] if isinstance(dep.get("request_timeout_ms"), int) else None,
                            **_deploy_cloud(dep))
    repeats = raw.get("repeats", 1)
    if isinstance(repeats, int) and not isinstance(repeats, bool) and not 1 <= repeats <= MAX_REPEATS:
        problems.append(origin.problem(("repeats",), f"repeats must be 1 to {MAX_REPEATS}", "wrong-type"))
    max_failed = raw.get("max_failed_lines", 0)
    if isinstance(max_failed, int) and max_failed < 0:
        problems.append(origin.problem(("max_failed_lines",), "max_failed_lines must be 0 or more", "wrong-type"))
    variant = raw.get("variant", source.get("variant"))
    flow = FlowSpec(
        name=name, path=flow_path, data=data_path,
        column_mapping=dict(as_dict(source.get("column_mapping"))),
        variant=variant if isinstance(variant, str) else None,
        connections=connections, environment_variables=env_vars,
        max_failed_lines=max_failed if isinstance(max_failed, int) and max_failed >= 0 else 0,
        evaluations=evaluations, gate=gate, register=register, deploy=deploy, run_file=run_file,
        base_run=source.get("run") if run_file is not None and isinstance(source.get("run"), str) else None,
        resources={**as_dict(source.get("resources")), **as_dict(raw.get("resources"))}, origin=origin,
        run_origin=run_origin,
        mlflow_agent=_agent_spec(flow_path, raw.get("mlflow_agent"), Origin(doc, ("flows", name, "mlflow_agent"))),
        init={**as_dict(source.get("init")), **as_dict(raw.get("init"))},
        parity=_parity_spec(raw.get("parity"), Origin(doc, ("flows", name, "parity"))),
        run_details={k: source[k] for k in RUN_DETAILS if run_file is not None and k in source},
        line_key=raw["line_key"] if isinstance(raw.get("line_key"), str) else None,
        cluster=raw["cluster"] if isinstance(raw.get("cluster"), str) else None,
        gate_family=raw["gate_family"] if raw.get("gate_family") in ("holm", "none") else "holm",
        repeats=raw["repeats"] if isinstance(raw.get("repeats"), int) and 1 <= raw["repeats"] <= MAX_REPEATS else 1,
        agent_framework=_maf_spec(flow_path, raw.get("agent_framework"),
                                  Origin(doc, ("flows", name, "agent_framework"))))
    return flow, problems, run_doc


def _ref_evaluation(name: str, raw: Any, origin: Origin, root: Path) -> tuple[Evaluation, list[Problem]] | None:
    """An ``evaluator:`` or ``scorer:`` evaluation (None for an evaluation flow). Its ``path`` is the config's
    folder, where a project's own evaluator modules are found."""
    if not isinstance(raw, dict) or not any(isinstance(raw.get(k), str) for k in ("evaluator", "scorer")):
        return None
    problems: list[Problem] = []
    data = _rel(root, raw.get("data"))
    if data is not None:
        problems += _outside(root, origin, ("data",), data)
    evaluation = Evaluation(
        name, root, data, dict(as_dict(raw.get("column_mapping"))), {}, dict(as_dict(raw.get("environment_variables"))),
        origin, {str(k): v for k, v in as_dict(raw.get("scores")).items() if isinstance(v, str)},
        dict(as_dict(raw.get("init"))),
        evaluator=raw["evaluator"] if isinstance(raw.get("evaluator"), str) else None,
        scorer=raw["scorer"] if isinstance(raw.get("scorer"), str) and not isinstance(raw.get("evaluator"), str)
        else None)
    return evaluation, problems


def _parity_spec(raw: Any, origin: Origin) -> ParitySpec | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("of"), str):
        return None
    outputs = {str(k): v for k, v in as_dict(raw.get("outputs")).items() if isinstance(v, str)}
    method = raw.get("method")
    return ParitySpec(raw["of"], outputs, method if isinstance(method, str) else "exact", origin)


def _maf_spec(path: Path, raw: Any, origin: Origin) -> AgentFrameworkSpec | None:
    if not isinstance(raw, dict):
        return None
    folder = path.parent if path.suffix in (".yaml", ".yml") else path
    bindings = raw.get("bindings")
    entry = raw.get("entry")
    code, attr = None, ""
    if isinstance(entry, str) and ":" in entry:
        file, _, attr = entry.rpartition(":")
        code = Path(os.path.normpath(folder / file))
    elif entry is not None:
        return None
    return AgentFrameworkSpec(code, attr, Path(os.path.normpath(folder / bindings)) if isinstance(bindings, str)
                              else None, origin)


def _agent_resources(raw: Any, key: Key) -> tuple[AgentResource, ...]:
    out = []
    for rtype, items in as_dict(raw).items():
        if rtype not in AGENT_RESOURCE_TYPES or not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            if isinstance(item, str):
                out.append(AgentResource(rtype, item, False, (*key, rtype, i)))
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                out.append(AgentResource(rtype, item["name"], item.get("on_behalf_of_user") is True,
                                         (*key, rtype, i)))
    return tuple(out)


def _agent_spec(folder: Path, raw: Any, origin: Origin) -> MlflowAgentSpec | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("code"), str) or raw.get("interface") not in (
            "responses", "chat"):
        return None
    policy = raw.get("auth_policy")
    if isinstance(policy, dict):
        resources = _agent_resources(policy.get("system_resources"), ("auth_policy", "system_resources"))
    else:
        resources = _agent_resources(raw.get("resources"), ("resources",))
    return MlflowAgentSpec(
        code=Path(os.path.normpath(folder / raw["code"])), interface=raw["interface"], resources=resources,
        pip_requirements=tuple(r for r in raw.get("pip_requirements") or [] if isinstance(r, str)),
        auth_policy=isinstance(policy, dict),
        api_scopes=tuple(s for s in as_dict(policy).get("api_scopes") or [] if isinstance(s, str)),
        origin=origin)


def _deploy_cloud(dep: dict[str, Any]) -> dict[str, Any]:
    """The backend-specific deploy: keys, typed; a value of the wrong type was reported by the schema."""
    out: dict[str, Any] = {}
    for key, spec in DEPLOY_CLOUD_KEYS.items():
        value = dep.get(key)
        if (spec is BOOL and isinstance(value, bool)) or (spec is STR and isinstance(value, str)) or (
                spec is INT and isinstance(value, int) and not isinstance(value, bool)):
            out[key] = value
    out["probes"] = {k: {n: v for n, v in as_dict(p).items() if isinstance(v, int)}
                     for k, p in as_dict(dep.get("probes")).items() if isinstance(p, dict)}
    out["identity"] = {k: v for k, v in as_dict(dep.get("identity")).items() if isinstance(v, str)}
    return out


def _deploy_limits(origin: Origin, dep: dict[str, Any]) -> list[Problem]:
    problems = []
    timeout = dep.get("request_timeout_ms")
    if isinstance(timeout, int) and timeout > AZUREML_MAX_REQUEST_TIMEOUT_MS:
        problems.append(origin.problem(("deploy", "request_timeout_ms"), (
            f"request_timeout_ms {timeout} is over {AZUREML_MAX_REQUEST_TIMEOUT_MS}, the most an Azure ML managed "
            "online deployment allows"), "wrong-type"))
    keep = dep.get("keep_previous")
    if isinstance(keep, int) and not 0 <= keep < MAX_SERVED_ENTITIES:
        problems.append(origin.problem(("deploy", "keep_previous"), (
            f"keep_previous must be 0 to {MAX_SERVED_ENTITIES - 1}: a Databricks endpoint serves at most "
            f"{MAX_SERVED_ENTITIES} entities, the new one included"), "wrong-type"))
    identity = as_dict(dep.get("identity"))
    if identity.get("type") == "user_assigned":
        rid = identity.get("resource_id")
        if not isinstance(rid, str) or not re.fullmatch(
                r"/subscriptions/[^/]+/resource[gG]roups/[^/]+/providers/"
                r"Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+", rid):
            problems.append(origin.problem(("deploy", "identity"), (
                "a user-assigned identity needs resource_id: /subscriptions/<id>/resourceGroups/<group>/providers/"
                "Microsoft.ManagedIdentity/userAssignedIdentities/<name>"), "wrong-type"))
        if not isinstance(identity.get("client_id"), str):
            problems.append(origin.problem(("deploy", "identity"), (
                "a user-assigned identity needs client_id (prompt flow serving reads it as UAI_CLIENT_ID to reach "
                "the workspace's connections)"), "wrong-type"))
    elif identity.get("type") == "system_assigned" and ("resource_id" in identity or "client_id" in identity):
        problems.append(origin.problem(("deploy", "identity"), (
            "resource_id and client_id are for type: user_assigned; a system-assigned identity has neither"),
            "wrong-type"))
    return problems


def _traffic_problems(origin: Origin, traffic: tuple[int, ...]) -> list[Problem]:
    # strictly rising: a repeated step ([10, 10, 100]) is a typo, not a pause
    if not traffic or any(t < 1 or t > 100 for t in traffic) or any(a >= b for a, b in itertools.pairwise(traffic)) \
            or traffic[-1] != 100:
        return [origin.problem(("deploy", "traffic"), "traffic must be rising percentages from 1 to 100, each "
                               f"above the last, that end at 100, e.g. [10, 100] (got {list(traffic)})", "wrong-type")]
    return []


# --- ${connection.field} in environment_variables (prompt flow resolves these from its connection store) ----------

_CONNECTION_REF = re.compile(r"^\$\{([^.{}:\s]+)\.([^{}\s]+)\}$")


def connection_ref(value: Any) -> tuple[str, str] | None:
    """``${my_conn.api_key}`` -> ("my_conn", "api_key"); None for anything else (``${env:X}`` included)."""
    m = _CONNECTION_REF.match(value.strip()) if isinstance(value, str) else None
    return (m.group(1), m.group(2)) if m else None


def connection_fields(conn: Connection) -> set[str]:
    """The fields ``${conn.field}`` can name: the type's fields, or a custom connection's configs and secrets."""
    if conn.type == "custom":
        return {str(k) for part in ("configs", "secrets") for k in as_dict(conn.values.get(part))}
    return set(CONNECTION_FIELDS.get(conn.type, ())) | {k for k in conn.values if k != "type"}


def connection_value(conn_values: dict[str, Any], conn_type: str, name: str) -> Any:
    if conn_type == "custom":
        for part in ("secrets", "configs"):
            if name in as_dict(conn_values.get(part)):
                return as_dict(conn_values.get(part))[name]
        return None
    return conn_values.get(name)
