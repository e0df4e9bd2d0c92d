"""The seam between the steps and the kinds of flow (DAG flows today; flex, prompty, MLflow later).

A kind recognises a folder and describes the flow in kind-neutral terms (``FlowInfo``):
its inputs and outputs, the nodes and variants that config can point at, the connections
it uses, and the findings from checking its own files. Steps only ever see ``FlowInfo``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from llmops_ci.lint.findings import Finding
from llmops_ci.yamldoc import YamlDoc


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


@dataclass
class FlowInfo:
    kind: str
    folder: Path
    definition: Path
    inputs: dict[str, FlowInput] = field(default_factory=dict)
    outputs: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)
    variants: dict[str, set[str]] = field(default_factory=dict)
    connections: list[ConnectionUse] = field(default_factory=list)
    # per node, the keys a run's `connections:` override may set (None: cannot tell statically)
    override_keys: dict[str, frozenset[str] | None] = field(default_factory=dict)
    docs: list[YamlDoc] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    loaded: bool = True


class FlowKind(Protocol):
    name: str

    def matches(self, folder: Path) -> bool:
        """True when ``folder`` (or file) holds a flow of this kind."""
        ...

    def inspect(self, folder: Path) -> FlowInfo:
        """Parse and statically check the flow; must not import promptflow, azure or the flow's code."""
        ...


def _registry() -> dict[str, FlowKind]:
    from llmops_ci.kinds.dag import DagFlowKind

    return {"dag": DagFlowKind()}


KINDS: dict[str, FlowKind] = _registry()


def kind_for(path: Path) -> FlowKind | None:
    for kind in KINDS.values():
        if kind.matches(path):
            return kind
    return None
