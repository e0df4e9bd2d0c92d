"""``--changed-since REF``: the flows a change touches, found with git.

``changed_files`` lists what differs between the merge base of REF and HEAD and the working tree
(commits on the branch, staged and unstaged edits, untracked files that are not ignored).
``select_flows`` maps those files onto the flows of a config: a flow is selected when its folder,
its additional includes, its requirements, its data, its run.yml, one of its evaluation flows or
their data, or its own entry in llmops.yaml changed; a change to any other top-level setting of
llmops.yaml selects every flow.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_ci.config import Config, FlowSpec
from llmops_ci.core.errors import ConfigError, UsageError
from llmops_ci.core.schema import as_dict
from llmops_ci.core.yamldoc import parse_yaml
from llmops_ci.project.evaluators import evaluator_files
from llmops_ci.project.loaded import Project

# What prompt flow and Python leave in a flow folder; never part of what runs.
NOISE_PARTS = frozenset({"__pycache__", ".promptflow", ".runs"})
NOISE_SUFFIXES = (".pyc", ".pyo")
_FETCH_DEPTH = "(with actions/checkout use fetch-depth: 0); on Azure Pipelines set fetchDepth: 0 on the checkout step"
_MISSING = object()


@dataclass(frozen=True)
class Selection:
    selected: list[str]            # flow names to run, in config order
    unchanged: list[str]           # flow names left out, in config order
    reasons: dict[str, list[str]]  # selected flow -> why, e.g. ["flows/classify/prompt.jinja2 changed"]
    all_reason: str | None         # set when every flow is selected, e.g. "llmops.yaml top-level 'connections' changed"


class ChangedFiles(set[Path]):
    """Absolute paths of changed files, remembering the commit they were compared with.

    ``base`` (the merge base) and ``root`` (the repository's top folder) let ``select_flows`` read
    llmops.yaml as it was, to tell which of its entries changed.
    """

    def __init__(self, paths: Iterable[Path] = (), *, base: str | None = None, root: Path | None = None) -> None:
        super().__init__(paths)
        self.base = base
        self.root = root


# --- git ---------------------------------------------------------------------------------------------

def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    if not cwd.is_dir():
        raise UsageError(f"--changed-since: {cwd} is not a folder")
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError:
        raise UsageError("--changed-since needs git, which is not installed or not on PATH") from None
    except OSError as exc:
        raise UsageError(f"--changed-since: cannot run git: {exc}") from None


def _err(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stderr.decode(errors="replace").strip()


def _names(output: bytes) -> list[str]:
    return [os.fsdecode(name) for name in output.split(b"\0") if name]


def repo_top(where: Path | None = None) -> Path:
    """The top folder of the git repository holding ``where`` (default: the working directory)."""
    where = Path(where) if where is not None else Path.cwd()
    proc = _git(where, "rev-parse", "--show-toplevel")
    if proc.returncode != 0:
        text = _err(proc)
        if "not a git repository" in text.lower():
            raise UsageError(f"--changed-since needs a git repository, and {where} is not inside one; run it in a "
                             "git checkout (or leave out --changed-since to run every flow)")
        raise UsageError(f"--changed-since: git failed in {where}: {text}")
    return Path(os.fsdecode(proc.stdout).rstrip("\n"))


def _fetch_hint(top: Path, ref: str) -> str:
    remotes = os.fsdecode(_git(top, "remote").stdout).split()
    name = ref.removeprefix("refs/remotes/")
    remote, _, branch = name.partition("/")
    if branch and (remote in remotes or not remotes):
        return f"git fetch {remote} {branch}"
    default = "origin" if "origin" in remotes or not remotes else remotes[0]
    return f"git fetch {default} {ref.removeprefix('refs/heads/')}"


def _verify(top: Path, rev: str) -> bool:
    return _git(top, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode == 0


def merge_base(ref: str, repo_root: Path | None = None) -> tuple[str, Path]:
    """The commit where HEAD's history left ``ref``, and the repository's top folder."""
    if not ref or ref.startswith("-") or any(c.isspace() for c in ref):
        raise UsageError(f"--changed-since {ref!r}: give a branch, tag or commit, e.g. origin/main")
    top = repo_top(repo_root)
    if not _verify(top, ref):
        raise UsageError(f"git cannot find REF '{ref}'; fetch it first: {_fetch_hint(top, ref)} {_FETCH_DEPTH}")
    if not _verify(top, "HEAD"):
        raise UsageError(f"--changed-since: the repository at {top} has no commit yet; commit first")
    proc = _git(top, "merge-base", ref, "HEAD")
    if proc.returncode != 0 or not proc.stdout.strip():
        shallow = os.fsdecode(_git(top, "rev-parse", "--is-shallow-repository").stdout).strip() == "true"
        if shallow:
            raise UsageError(f"git finds no common history between '{ref}' and HEAD because this clone is shallow; "
                             f"fetch the full history: git fetch --unshallow {_FETCH_DEPTH}")
        raise UsageError(f"git finds no common history between '{ref}' and HEAD; compare with the branch this one "
                         "was started from")
    return os.fsdecode(proc.stdout).strip(), top


def changed_files(ref: str, repo_root: Path | None = None) -> ChangedFiles:
    """Absolute paths of files that differ between the merge base of ``ref`` and HEAD, plus uncommitted
    changes (staged and unstaged) and untracked files that git does not ignore. A rename counts as both paths.

    ``repo_root`` is any folder inside the repository (default: the working directory).
    Raises UsageError (exit 2) outside a git repository or when git does not know ``ref``.
    """
    base, top = merge_base(ref, repo_root)
    names: set[str] = set()
    for args in (("diff", "--name-only", "--no-renames", "--no-ext-diff", "-z", base, "--"),
                 ("diff", "--cached", "--name-only", "--no-renames", "--no-ext-diff", "-z", base, "--"),
                 ("ls-files", "--others", "--exclude-standard", "-z")):
        proc = _git(top, *args)
        if proc.returncode != 0:
            raise UsageError(f"--changed-since: git {args[0]} failed: {_err(proc)}")
        names.update(_names(proc.stdout))
    return ChangedFiles((top / name for name in names), base=base, root=top)


def _file_at(top: Path, base: str, path: Path) -> str | None:
    """The text of ``path`` at commit ``base``, or None when it did not exist there."""
    try:
        rel = Path(os.path.realpath(path)).relative_to(os.path.realpath(top)).as_posix()
    except ValueError:
        return None
    spec = f"{base}:{rel}"
    if _git(top, "cat-file", "-e", spec).returncode != 0:
        return None
    proc = _git(top, "cat-file", "blob", spec)
    if proc.returncode != 0:
        raise UsageError(f"--changed-since: git cannot read {spec}: {_err(proc)}")
    return proc.stdout.decode("utf-8", errors="replace")


# --- selection ---------------------------------------------------------------------------------------

def _real(path: Path | str) -> Path:
    return Path(os.path.realpath(path))


def _norm(folder: Path, rel: str) -> Path:
    return Path(os.path.normpath(folder / rel))


def _noise(rel: Path) -> bool:
    return any(part in NOISE_PARTS for part in rel.parts) or rel.suffix in NOISE_SUFFIXES


def _flow_folder_deps(project: Project, path: Path, label: str) -> list[tuple[Path, str]]:
    """A flow's folder and what its kind says it depends on besides (includes, requirements), each with why."""
    folder = path.parent if path.is_file() else path
    of = f" of {label}" if label else ""
    deps: list[tuple[Path, str]] = [(folder, label)]
    info = project.info(path)
    if info is not None:
        deps += [(dep.path, f"{dep.label}{of}") for dep in info.dependencies]
    return deps


def flow_dependencies(project: Project, flow: FlowSpec) -> list[tuple[Path, str]]:
    """Every file or folder whose change selects ``flow``, with a short label ('' for the flow folder)."""
    deps = _flow_folder_deps(project, flow.path, "")
    if flow.data is not None:
        deps.append((flow.data, "data"))
    if flow.run_file is not None:
        deps.append((flow.run_file, "run_file"))
        run_data = as_dict(flow.run_origin.doc.data) if flow.run_origin is not None else {}
        env_file = run_data.get("environment_variables")
        if isinstance(env_file, str) and env_file:
            deps.append((_norm(flow.run_file.parent, env_file), "environment_variables file"))
    # a replayed answer is an input like the data: a re-recorded cassette changes the results
    deps.append((project.config.cassettes / f"{flow.name}.json", "LLM cassette"))
    for ev in flow.evaluations.values():
        label = f"evaluation {ev.name}"
        if ev.ref:  # an evaluator:/scorer: depends on its module when the project holds it (a library's is pinned)
            deps += [(path, label) for path in evaluator_files(ev, project.config.root)]
        else:
            deps += _flow_folder_deps(project, ev.path, label)
        if ev.data is not None:
            deps.append((ev.data, f"data of {label}"))
        deps.append((project.config.cassettes / f"{flow.name}.{ev.name}.json", f"LLM cassette of {label}"))
    other = project.config.flows.get(flow.parity.of) if flow.parity is not None else None
    if other is not None:  # parity compares with the other flow's answers: its change changes the verdict
        deps += _flow_folder_deps(project, other.path, f"parity flow {other.name}")
    return [(_real(path), label) for path, label in deps]


def _display(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:
        return str(path)


def _differs(old: dict[Any, Any], new: dict[Any, Any], key: Any) -> bool:
    return old.get(key, _MISSING) != new.get(key, _MISSING)


def _config_changes(config: Config, base: str | None, top: Path | None) -> tuple[str | None, dict[str, list[str]]]:
    """(why every flow is selected or None, flow -> reasons) from llmops.yaml at ``base`` versus now."""
    name = config.path.name
    if base is None:
        return f"{name} changed and there is no base commit to compare it with", {}
    if top is None:
        top = repo_top(config.root)
    text = _file_at(top, base, config.path)
    short = base[:12]
    if text is None:
        return f"{name} did not exist at {short}", {}
    try:
        old_data = parse_yaml(text, config.path).data
    except ConfigError:
        return f"{name} at {short} is not valid YAML", {}
    new_data = config.doc.data
    if not isinstance(old_data, dict) or not isinstance(new_data, dict):
        return f"{name} at {short} is not a mapping", {}
    top_keys = [k for k in sorted({*old_data, *new_data} - {"flows"}, key=str) if _differs(old_data, new_data, k)]
    all_reason = None
    if top_keys:
        all_reason = f"{name} top-level " + ", ".join(f"'{k}'" for k in top_keys) + " changed"
    old_flows, new_flows = as_dict(old_data.get("flows")), as_dict(new_data.get("flows"))
    reasons: dict[str, list[str]] = {}
    for flow in config.flows:
        if flow not in old_flows:
            reasons[flow] = [f"new flow in {name}"]
        elif old_flows[flow] != new_flows.get(flow):
            old_entry, new_entry = as_dict(old_flows[flow]), as_dict(new_flows.get(flow))
            keys = [k for k in sorted({*old_entry, *new_entry}, key=str) if _differs(old_entry, new_entry, k)]
            reasons[flow] = [f"{name} flows.{flow}.{k} changed" for k in keys] or [f"{name} flows.{flow} changed"]
    return all_reason, reasons


def select_flows(config: Config | Project, changed: set[Path], *, base: str | None = None,
                 repo_root: Path | None = None) -> Selection:
    """The flows of ``config`` that the ``changed`` files touch.

    ``base`` is the commit llmops.yaml is compared with (default: the one ``changed_files`` used);
    without it, a change to llmops.yaml selects every flow.
    """
    project = config if isinstance(config, Project) else Project(config)
    config = project.config
    if isinstance(changed, ChangedFiles):
        base = base if base is not None else changed.base
        repo_root = repo_root if repo_root is not None else changed.root
    files = {_real(p) for p in changed}
    config_path = _real(config.path)
    root = _real(config.root)
    all_reason: str | None = None
    found: dict[str, list[str]] = {name: [] for name in config.flows}
    if config_path in files:
        files.discard(config_path)  # judged by content below, not as a file of any flow folder
        all_reason, entry_reasons = _config_changes(config, base, repo_root)
        for name, why in entry_reasons.items():
            found[name] += why
    for name, flow in config.flows.items():
        deps = flow_dependencies(project, flow)
        for file in sorted(files):
            for dep, label in deps:
                if file != dep and dep not in file.parents:
                    continue
                if file != dep and _noise(file.relative_to(dep)):
                    continue
                found[name].append(f"{_display(file, root)} changed" + (f" ({label})" if label else ""))
                break
    selected = [name for name in config.flows if all_reason or found[name]]
    reasons = {name: found[name] or [all_reason or ""] for name in selected}
    return Selection(selected, [name for name in config.flows if name not in selected], reasons, all_reason)
