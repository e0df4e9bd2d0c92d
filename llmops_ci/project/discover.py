"""Finding the flows below a folder (any kind), for lint without a config and for ``init``."""

from __future__ import annotations

import os
from pathlib import Path

from llmops_ci.kinds import kind_for

_SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", ".venv", "venv", ".tox", ".nox", "__pycache__", ".llmops",
              "site-packages", ".mypy_cache", ".ruff_cache", ".pytest_cache", "build", "dist"}


def discover(root: Path) -> list[Path]:
    """Flow folders below ``root`` (any kind), skipping VCS, virtualenv and build folders."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        path = Path(dirpath)
        if kind_for(path) is not None:
            found.append(path)
        else:  # flow files side by side (several .prompty files, x.flex.yaml): each is a flow
            found += [path / name for name in sorted(filenames) if kind_for(path / name) is not None]
    return found
