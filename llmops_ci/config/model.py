"""``llmops.yaml`` as typed values: a config, its flows and their evaluations, gate, register and deploy settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from llmops_ci.core.errors import UsageError
from llmops_ci.core.schema import did_you_mean
from llmops_ci.core.yamldoc import YamlDoc
from llmops_ci.diagnostics.origin import Origin

T = TypeVar("T")


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
    init: dict[str, Any] = field(default_factory=dict)  # a flex class entry's __init__ arguments
    parity: ParitySpec | None = None
    run_details: dict[str, Any] = field(default_factory=dict)  # a run.yml's RUN_DETAILS, as written
    line_key: str | None = None  # ${data.<column>} that pairs baseline and current lines (default: mapped inputs)
    cluster: str | None = None  # ${data.<column>}: lines sharing a value are one unit for intervals and verdicts
    gate_family: str = "holm"  # how the flow's paired verdicts are corrected for many metrics: holm | none
    repeats: int = 1  # each data line runs this many times (its evaluations score every repeat)
    # a config-declared kind's block (``mlflow_agent:``) as that kind built it, by the block's key
    blocks: dict[str, object] = field(default_factory=dict)

    def block(self, spec_type: type[T]) -> T | None:
        """The declared kind's block of this type, e.g. ``flow.block(MlflowAgentSpec)``; None when the flow has
        none."""
        return next((b for b in self.blocks.values() if isinstance(b, spec_type)), None)

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

