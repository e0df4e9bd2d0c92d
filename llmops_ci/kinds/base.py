"""What a kind is (the ``FlowKind`` protocol) and the kind-neutral values it describes a flow with.

A kind recognises a folder or file, describes the flow in kind-neutral terms (``FlowInfo``: its
inputs and outputs, the nodes and variants config can point at, the connections it uses, the files
it depends on, its chat interface and the findings from checking its own files) and makes a private
runnable ``Snapshot`` of it. Nothing outside ``kinds/`` reads a flow's definition file.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from llmops_ci.core.errors import ConfigError
from llmops_ci.core.schema import Spec
from llmops_ci.core.yamldoc import YamlDoc, load_yaml
from llmops_ci.diagnostics import secrets
from llmops_ci.diagnostics.findings import Finding, Rule, finding, from_problem
from llmops_ci.diagnostics.origin import Origin


@dataclass(frozen=True)
class FlowInput:
    name: str
    type: str
    has_default: bool  # a default prompt flow uses: in a DAG or prompty file, a null default is none


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
    # facts other layers act on instead of testing kind names:
    # which executor runs it: "promptflow" (prompt flow's, the default) or a key of engines.ENGINES
    engine: str = "promptflow"
    # what serves it once deployed: "promptflow" (prompt flow's serving app), its engine's own server, or None
    # when no deploy target can (a prompty 2.x file)
    served_by: str | None = "promptflow"
    # an input's default wins over a same-named data column unless the column is mapped (prompt flow's rule, which
    # runs follow; engines.mapping applies it too): lint warns, runs say so
    defaults_shadow_columns: bool = False
    # what a line lacking a mapped column gets: no value ("absent"), prompt flow's NaN ("nan"), or NaN converted to
    # the input's declared type, which fails an int/bool/list input ("typed", a DAG)
    missing_value: Literal["absent", "nan", "typed"] = "absent"
    # its code looks connections up by name in prompt flow's store at run time (a flex entry, a prompty file), so
    # a run's record/replay route cannot ride on the connection itself; a DAG names its connection per node
    connections_by_name: bool = False
    # a class entry's __init__ parameters (name -> required), which a run's `init:` must give; None: no such entry
    init_params: dict[str, bool] | None = None
    init_types: dict[str, str] = field(default_factory=dict)  # those parameters' annotations, where simple
    findings: list[Finding] = field(default_factory=list)
    loaded: bool = True

    def shadowed_defaults(self, mapping: Mapping[str, Any], columns: Container[str]) -> list[str]:
        """The inputs that run on their default although the data has a column of their name (nothing maps them)."""
        if not self.defaults_shadow_columns:
            return []
        return [name for name, spec in self.inputs.items() if spec.has_default and name not in mapping
                and name in columns]


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


@runtime_checkable
class DeclaredKind(FlowKind, Protocol):
    """A kind that a flow entry of llmops.yaml declares with a block of its own (``mlflow_agent:``): the kind owns
    the block's schema and the value built from it; config reads every such block through the registry."""

    block: str  # the block's key in a flow entry
    block_schema: Spec
    excludes: tuple[str, ...]  # flow keys the block cannot be written with (other kinds' blocks never can)

    def declare(self, path: Path, raw: Any, origin: Origin) -> object | None:
        """The block as the kind's typed value (``raw`` None: no block); None when too broken to build (the
        schema check has said why)."""
        ...

    def inspect_declared(self, path: Path, spec: Any) -> FlowInfo | None:
        """The flow at ``path`` as its block declares it; None: inspect it by its files as usual."""
        ...


def open_definition(info: FlowInfo, definition: Path, shape: str) -> YamlDoc | None:
    """A kind's YAML definition file, loaded (bounded) with its duplicate keys and literal secrets reported into
    ``info``; None, with ``info.loaded`` False, when it does not parse or is not a mapping (``shape`` says what
    it must be)."""
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
