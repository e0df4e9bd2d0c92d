"""The one way llmops-ci copies a folder or file: never through a link out of the project, never around a loop.

Snapshots of every kind, register's model files, the Azure ML upload list, the baseline carry-over of
``--changed-since`` and deploy all copy what a pull request controls. A symbolic link in it could
point anywhere the runner can read (``/proc/self/environ``, ``~/.ssh``); ``shutil.copytree`` follows
it and the target's bytes end up in an artifact. Here a link is copied as its target only when the
target lies inside the project; a link out is exit 2 naming the link, a loop likewise. Special files
(FIFOs, devices, sockets) are never read.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from llmops_ci.core.errors import UsageError
from llmops_ci.core.yamldoc import display_path

Ignore = Callable[[str, list[str]], Iterable[str]]
_root: Path | None = None  # the project being worked on (set when its config is loaded)


def set_project_root(root: Path) -> None:
    """Links may lead anywhere below ``root`` (the folder of llmops.yaml); nowhere else."""
    global _root
    _root = Path(os.path.realpath(root))


def project_root(within: Path | None = None) -> Path | None:
    """The project being worked on; with ``within``, only when ``within`` lies inside it (a folder of another
    project, e.g. a registered model under a state dir elsewhere, has no project root here)."""
    if _root is None or within is None:
        return _root
    return _root if Path(os.path.realpath(within)).is_relative_to(_root) else None


class LinkRefused(UsageError):
    rule = "path-outside"

    def __init__(self, link: Path, reason: str) -> None:
        self.link, self.reason = display_path(link), reason
        super().__init__(f"{self.link}: {reason}")


class LinkOutside(LinkRefused):
    def __init__(self, link: Path, target: str, root: Path) -> None:
        super().__init__(link, f"a link to {target}, outside the project folder {root}; llmops-ci never copies "
                         "what lies outside the project (it could be a credential): replace the link with the file "
                         "itself, or move the target into the project")


class LinkLoop(LinkRefused):
    rule = "link-loop"

    def __init__(self, link: Path) -> None:
        super().__init__(link, "a link that leads back into a folder that contains it (a loop); remove the link")


def link_problem(link: Path, root: Path | None = None) -> LinkRefused | None:
    """Why copying ``link`` (a symbolic link) is refused, or None when its target is inside the project."""
    allowed = Path(os.path.realpath(root)) if root is not None else _root
    try:
        target = os.path.realpath(link, strict=True)
    except OSError as exc:  # a loop of links, or one to nothing
        if "loop" in str(exc).lower() or getattr(exc, "errno", None) == 40:
            return LinkLoop(link)
        return None  # dangling: nothing to copy
    if allowed is not None and not Path(target).is_relative_to(allowed):
        return LinkOutside(link, target, allowed)
    if Path(target).is_dir() and Path(os.path.realpath(link.parent)).is_relative_to(target):
        return LinkLoop(link)
    return None


def require_inside(path: Path, what: str, flow: Path) -> None:
    """``path`` (an include, a requirements file: named by ``flow``, copied into its snapshot) must resolve inside
    the flow's project; exit 2 otherwise (lint reports it as path-outside first)."""
    root = project_root(flow)
    if root is not None and not Path(os.path.realpath(path)).is_relative_to(root):
        raise LinkRefused(path, f"{what} leads to {os.path.realpath(path)}, outside the project folder {root}; "
                                "move what the flow needs inside the project")


def copy_tree(src: Path, dest: Path, *, ignore: Ignore | None = None, dirs_exist_ok: bool = False,
              root: Path | None = None, skip_links: bool = False) -> None:
    """``shutil.copytree`` without following a link out of ``root`` (default: the project) or around a loop.

    ``skip_links``: links are left out (with nothing said) instead of copied as their targets; for folders that
    only llmops-ci writes (a baseline's run records), where a link can only be a plant.
    """
    if not dirs_exist_ok and dest.exists():
        raise FileExistsError(dest)
    _copy_dir(Path(src), Path(dest), ignore, root or project_root(src) or Path(os.path.realpath(src)), skip_links,
              {os.path.realpath(src)})


def copy_file(src: Path, dest: Path, *, root: Path | None = None) -> None:
    """One file (``src`` may be a link into the project); special files are refused."""
    if src.is_symlink():
        problem = link_problem(src, root or project_root(src.parent) or Path(os.path.realpath(src.parent)))
        if problem is not None:
            raise problem
    if not src.is_file():
        raise UsageError(f"{display_path(src)}: not a regular file; llmops-ci copies only files and folders")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)


def _copy_dir(src: Path, dest: Path, ignore: Ignore | None, root: Path | None, skip_links: bool,
              chain: set[str]) -> None:
    names = sorted(os.listdir(src))
    ignored = set(ignore(str(src), names)) if ignore is not None else set()
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name in ignored:
            continue
        path, target = src / name, dest / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(mode):
            if skip_links:
                continue
            problem = link_problem(path, root)
            if problem is not None:
                raise problem
            real = os.path.realpath(path)
            if not os.path.exists(real):
                continue  # dangling
            if os.path.isdir(real):
                if real in chain:
                    raise LinkLoop(path)
                _copy_dir(Path(real), target, ignore, root, skip_links, chain | {real})
            elif stat.S_ISREG(os.stat(real).st_mode):
                shutil.copy2(real, target)
        elif stat.S_ISDIR(mode):
            _copy_dir(path, target, ignore, root, skip_links, chain | {os.path.realpath(path)})
        elif stat.S_ISREG(mode):
            shutil.copy2(path, target)
        # FIFOs, sockets and devices are never read: a copy would block or never end


def links_out(folder: Path, root: Path) -> list[LinkRefused]:
    """Every link below ``folder`` that copying would refuse (lint's view: all of them, not the first)."""
    out: list[LinkRefused] = []
    for dirpath, dirnames, filenames in os.walk(folder):  # os.walk never descends into a linked folder
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            if path.is_symlink():
                problem = link_problem(path, root)
                if problem is not None:
                    out.append(problem)
        dirnames[:] = sorted(d for d in dirnames if d not in (".git", "node_modules", ".venv", "venv", ".llmops"))
        if len(out) > 100:
            break
    return out
