"""What a result rests on: the content that ran (``flow_hash``), the data it read (``data_hash``) and when.

A run's ``flow_hash`` covers the flow's files (with ``additional_includes`` and other folders it depends on
merged), the variant, the connection overrides, ``init:`` and ``environment_variables`` as written in the
config (not their resolved secrets); an MLflow agent's also its code file and declared resources. ``register``
computes it again and refuses content the gate never judged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_ci.core.yamldoc import display_path
from llmops_ci.kinds.mlflow.spec import MlflowAgentSpec

if TYPE_CHECKING:
    from llmops_ci.config import Evaluation, FlowSpec
    from llmops_ci.kinds.base import FlowInfo

_IGNORED = ("__pycache__", ".promptflow", ".runs")
_CHUNK = 1 << 20


def files(folder: Path) -> list[Path]:
    """The regular files below ``folder`` that make up a flow, in a stable order."""
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _IGNORED)
        # only regular files: a FIFO or a link to a device would block or never end
        out += [Path(root) / f for f in sorted(names) if not f.endswith(".pyc") and (Path(root) / f).is_file()]
    return out


def tree_digest(path: Path, info: FlowInfo | None, settings: dict[str, Any]) -> str:
    """sha256 (hex) of the files of the flow at ``path``, the folders it depends on, and ``settings``."""
    digest = hashlib.sha256()
    folders = [path]
    for dep in info.dependencies if info is not None else []:
        if dep.path not in folders and not dep.path.is_relative_to(path.absolute()):
            folders.append(dep.path.resolve())
    for folder in folders:
        for file in files(folder) if folder.is_dir() else [folder] if folder.is_file() else []:
            digest.update(file.relative_to(folder if folder.is_dir() else folder.parent).as_posix().encode())
            digest.update(b"\0" + file.read_bytes() + b"\0")
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def flow_hash(flow: FlowSpec, info: FlowInfo | None) -> str:
    """The content a batch run of ``flow`` runs."""
    settings: dict[str, Any] = {"variant": flow.variant, "connections": flow.connections, "init": flow.init,
                                "environment_variables": flow.environment_variables}
    digest = tree_digest(flow.path, info, settings)
    agent = flow.block(MlflowAgentSpec)
    if agent is not None:  # its code file may live outside the folder; its resources decide what it may call
        extra = hashlib.sha256(digest.encode())
        if agent.code.is_file():
            extra.update(agent.code.read_bytes())
        extra.update(json.dumps([dataclasses.asdict(r) for r in agent.resources] + [agent.interface],
                                sort_keys=True, default=str).encode())
        digest = extra.hexdigest()
    return digest[:16]


def evaluation_hash(evaluation: Evaluation, info: FlowInfo | None) -> str:
    """The content an evaluation run of ``evaluation`` runs."""
    settings = {"connections": evaluation.connections, "init": evaluation.init,
                "environment_variables": evaluation.environment_variables}
    return tree_digest(evaluation.path, info, settings)[:16]


def data_hash(path: Path) -> str | None:
    """sha256 (16 hex digits) of a data file as it is now; None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()[:16]


def now() -> str:
    """The current time in UTC, ISO 8601 to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def config_id(path: Path) -> str:
    """How results name the config they belong to: its path as the user gives it (relative to the working dir)."""
    return display_path(path)
