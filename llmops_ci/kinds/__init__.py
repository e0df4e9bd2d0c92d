"""The seam between the steps and the kinds of flow (DAG flows, and the kinds that plug in beside them).

A kind recognises a folder or file, describes the flow in kind-neutral terms (``FlowInfo``: its
inputs and outputs, the nodes and variants config can point at, the connections it uses, the files
it depends on, its chat interface and the findings from checking its own files) and makes a private
runnable ``Snapshot`` of it. Nothing outside this package reads a flow's definition file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmops_ci.diagnostics.findings import Finding, Rule, register_rules

if TYPE_CHECKING:
    from llmops_ci.core.yamldoc import YamlDoc


@dataclass(frozen=True)
class FlowInput:
    name: str
    type: str
    has_default: bool


@dataclass(frozen=True)
class ConnectionUse:
    """A node that talks to a connection; ``field`` is 'connection' for LLM nodes, else the tool argument."""

    node: str
    connection: str | None
    field: str
    path: str
    line: int | None
    column: int | None
    params: frozenset[str] = frozenset()  # the node's input names (an LLM node's model settings among them)
    llm: bool = True  # an LLM node (it must name a model); False for a tool argument typed as a connection


@dataclass(frozen=True)
class Dependency:
    """A file or folder besides the flow's own folder that decides what the flow does."""

    path: Path  # absolute, normalised (not resolved: a symlinked include is reported where it is written)
    label: str  # why, e.g. "additional include", "python_requirements_txt"
    source: str = ""  # the file that names it, as shown to users, and where
    line: int | None = None
    column: int | None = None


@dataclass
class FlowInfo:
    kind: str
    folder: Path
    definition: Path
    inputs: dict[str, FlowInput] = field(default_factory=dict)
    outputs: set[str] = field(default_factory=set)
    outputs_open: bool = False  # more outputs than `outputs` may come out (a flex entry returning a dict)
    # per output, the value type as best known statically (a Python tool's return annotation beats the declared
    # type, which prompt flow does not enforce): "int", "double", "bool", "string", "object", "list"; absent: unknown
    output_types: dict[str, str] = field(default_factory=dict)
    nodes: set[str] = field(default_factory=set)
    variants: dict[str, set[str]] = field(default_factory=dict)
    connections: list[ConnectionUse] = field(default_factory=list)
    # per node, the keys a run's `connections:` override may set (None: cannot tell statically)
    override_keys: dict[str, frozenset[str] | None] = field(default_factory=dict)
    dependencies: list[Dependency] = field(default_factory=list)
    chat_input: str | None = None
    chat_output: str | None = None
    chat_history: str | None = None
    environment_variables: dict[str, str] = field(default_factory=dict)
    # which executor runs it, when the kind can go to more than one (a prompty file: "promptflow" or "prompty")
    engine: str | None = None
    # a class entry's __init__ parameters (name -> required), which a run's `init:` must give; None: no such entry
    init_params: dict[str, bool] | None = None
    init_types: dict[str, str] = field(default_factory=dict)  # those parameters' annotations, where simple
    findings: list[Finding] = field(default_factory=list)
    loaded: bool = True


@dataclass(frozen=True)
class Snapshot:
    """A private runnable copy of a flow: includes merged, the variant and connection overrides applied."""

    folder: Path
    entry: Path  # the file an executor is given (flow.dag.yaml, flow.flex.yaml, a .prompty file)


class FlowKind(Protocol):
    name: str

    def matches(self, path: Path) -> bool:
        """True when ``path`` (a folder or a file) holds a flow of this kind."""
        ...

    def inspect(self, path: Path) -> FlowInfo:
        """Parse and statically check the flow; must not import promptflow, azure or the flow's code."""
        ...

    def snapshot(self, info: FlowInfo, dest: Path, *, variant: str | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> Snapshot:
        """Copy the flow to ``dest`` (replaced if present) as it would run."""
        ...

    def rules(self) -> list[Rule]:
        """The lint rules this kind's ``inspect`` reports."""
        ...


def open_definition(info: FlowInfo, definition: Path, shape: str) -> YamlDoc | None:
    """A kind's YAML definition file, loaded (bounded) with its duplicate keys and literal secrets reported into
    ``info``; None, with ``info.loaded`` False, when it does not parse or is not a mapping (``shape`` says what
    it must be)."""
    from llmops_ci.core.errors import ConfigError
    from llmops_ci.core.yamldoc import load_yaml
    from llmops_ci.diagnostics import secrets
    from llmops_ci.diagnostics.findings import finding, from_problem

    try:
        doc = load_yaml(definition)
    except ConfigError as exc:
        info.findings += [from_problem(p) for p in exc.problems]
        info.loaded = False
        return None
    info.findings += [from_problem(p) for p in doc.duplicates]
    info.findings += secrets.scan(doc)
    if not isinstance(doc.data, dict):
        line, column = doc.pos()
        info.findings.append(finding("wrong-type", doc.display, line, column,
                                     f"{definition.name} must be a mapping {shape}"))
        info.loaded = False
        return None
    return doc


def _registry() -> dict[str, FlowKind]:
    from llmops_ci.kinds.agent_framework.kind import AgentFrameworkKind
    from llmops_ci.kinds.dag.kind import DagFlowKind
    from llmops_ci.kinds.flex import FlexFlowKind
    from llmops_ci.kinds.mlflow.kind import MlflowAgentKind
    from llmops_ci.kinds.prompty.kind import PromptyFlowKind

    # mlflow_agent never matches a path: it is declared by an `mlflow_agent:` block in llmops.yaml
    return {"dag": DagFlowKind(), "flex": FlexFlowKind(), "prompty": PromptyFlowKind(),
            "mlflow_agent": MlflowAgentKind(), "agent_framework": AgentFrameworkKind()}


KINDS: dict[str, FlowKind] = _registry()
for _kind in KINDS.values():
    register_rules(_kind.rules())


def kind_for(path: Path) -> FlowKind | None:
    for kind in KINDS.values():
        if kind.matches(path):
            return kind
    return None


def flow_folder(path: Path) -> Path:
    """A flow's path as the steps use it: the definition file of a folder flow (``flow.dag.yaml``) stands for
    the folder holding it; anything else is itself."""
    try:
        if path.is_file():
            kind = kind_for(path)
            if kind is not None and path.name in getattr(kind, "folder_files", ()):
                return path.parent
    except (OSError, ValueError):  # a name the file system refuses: lint reports the path
        pass
    return path


def inspect(path: Path) -> FlowInfo | None:
    """The flow at ``path`` inspected by the kind that recognises it, or None."""
    kind = kind_for(path)
    return kind.inspect(path) if kind is not None else None


def snapshot(info: FlowInfo, dest: Path, *, variant: str | None = None,
             overrides: dict[str, dict[str, Any]] | None = None) -> Snapshot:
    return KINDS[info.kind].snapshot(info, dest, variant=variant, overrides=overrides)


def snapshot_of(path: Path, dest: Path, *, variant: str | None = None,
                overrides: dict[str, dict[str, Any]] | None = None) -> Snapshot:
    """``snapshot`` for a flow known only by its path (a registered model's source)."""
    info = inspect(path)
    if info is None:
        raise ValueError(f"{path}: no flow kind recognises it")
    return snapshot(info, dest, variant=variant, overrides=overrides)
