"""The ``agent_framework:`` block of a flow entry in llmops.yaml: a Python entry (``file.py:create_workflow`` or
``file.py:agent``) and/or the file whose functions a declarative agent's ``kind: function`` tools bind to."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_ci.core.schema import PathValue, Scalar, Struct
from llmops_ci.diagnostics.origin import Origin

AGENT_FRAMEWORK = Struct({"entry": Scalar((str,), pattern=r"[^:\s]+\.py:[A-Za-z_][A-Za-z0-9_]*",
                                          hint=": write '<file>.py:<function or object>', e.g. "
                                               "workflow.py:create_workflow"),
                          "bindings": PathValue()}, what="in agent_framework")


@dataclass(frozen=True)
class AgentFrameworkSpec:
    code: Path | None  # absolute: the Python entry file (None: a declarative file flow)
    attr: str  # the factory or object in it
    bindings: Path | None = None  # absolute: the functions a declarative agent's tools bind to
    origin: Origin | None = field(default=None, repr=False, compare=False)  # at flows.<name>.agent_framework


def framework_spec(path: Path, raw: Any, origin: Origin) -> AgentFrameworkSpec | None:
    """The block as a typed value; None when it is absent or its entry is not a string (the schema says why)."""
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
