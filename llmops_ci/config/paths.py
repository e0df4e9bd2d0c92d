"""Paths written in llmops.yaml and run.yml: relative to the file, and never out of the project folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llmops_ci.core.errors import Problem
from llmops_ci.core.safe_copy import links_out
from llmops_ci.core.schema import path_problem
from llmops_ci.core.yamldoc import Key
from llmops_ci.diagnostics.origin import Origin
from llmops_ci.kinds import flow_folder


def rel(root: Path, value: Any) -> Path | None:
    if not isinstance(value, str) or path_problem(value):  # the schema check says why
        return None
    return Path(os.path.normpath(root / value))


def flow_dir(path: Path | None) -> Path | None:
    """A flow's folder: ``path:`` may name the folder or the definition file inside it (the kinds know which)."""
    return flow_folder(path) if path is not None else None


def inside_project(root: Path, path: Path) -> bool:
    """Whether ``path`` (symlinks followed) is in the project folder ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def outside(root: Path, origin: Origin, sub: Key, path: Path) -> list[Problem]:
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


def outside_tree(root: Path, origin: Origin, sub: Key, path: Path) -> list[Problem]:
    """``outside`` for a path that may be a folder read whole (a data folder, the cassettes): a link in it that leads
    out of the project is refused too, where it is (its content would be read as the project's and published)."""
    found = outside(root, origin, sub, path)
    if found or not path.is_dir():
        return found
    return [origin.problem(sub, f"'{os.path.relpath(link.link, root) if os.path.isabs(link.link) else link.link}' in "
                           f"'{os.path.relpath(path, root)}': {link.reason}", link.rule)
            for link in links_out(path, root)]
