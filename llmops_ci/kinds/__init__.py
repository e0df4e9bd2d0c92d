"""The registry of flow kinds (``KINDS``) and the look-ups over it; what a kind is lives in ``kinds.base``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmops_ci.diagnostics.findings import Rule, add_rule_source
from llmops_ci.kinds.agent_framework.kind import AgentFrameworkKind
from llmops_ci.kinds.base import DeclaredKind, FlowInfo, FlowKind, Snapshot
from llmops_ci.kinds.dag.kind import DagFlowKind
from llmops_ci.kinds.flex import FlexFlowKind
from llmops_ci.kinds.mlflow.kind import MlflowAgentKind
from llmops_ci.kinds.prompty.kind import PromptyFlowKind

# mlflow_agent never matches a path: it is declared by an `mlflow_agent:` block in llmops.yaml
KINDS: dict[str, FlowKind] = {"dag": DagFlowKind(), "flex": FlexFlowKind(), "prompty": PromptyFlowKind(),
                              "mlflow_agent": MlflowAgentKind(), "agent_framework": AgentFrameworkKind()}


def _rules() -> list[Rule]:
    return [rule for kind in KINDS.values() for rule in kind.rules()]


# each kind's rule table joined the catalogue when it was declared; a kind added to KINDS later (a plug-in, a
# test's) brings its rules the first time one is asked for
add_rule_source(_rules)


def declared_kinds() -> dict[str, DeclaredKind]:
    """The kinds a flow entry of llmops.yaml declares with a block of its own, by the block's key."""
    return {kind.block: kind for kind in KINDS.values() if isinstance(kind, DeclaredKind)}


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
