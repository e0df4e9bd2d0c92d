"""What a replayed answer rests on: cassette entries as they are now versus on the base branch.

A pull request can re-record the answers its gate replays (from a stand-in model, or by hand). The
gate then passes on answers the change itself wrote. Per run, ``llm_cache.recorded_in_change``
counts the replayed answers whose cassette entry was added or changed since the base (the merge base
with ``--changed-since REF``, or with the CI's target branch); ``--llm-cache-base-only`` replays only
entries that exist, unchanged, on the base (the others are misses). See docs/security.md.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_ci.core.errors import UsageError
from llmops_ci.llm.cassette import CassetteProvenance

log = logging.getLogger("llmops_ci.llm_cache")


@dataclass(frozen=True)
class CacheBase:
    commit: str       # the merge base the cassettes are compared with
    ref: str          # what it was asked as (origin/main)
    top: Path         # the repository's top folder
    base_only: bool = False


def _git(top: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], cwd=top, capture_output=True, check=False, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return subprocess.CompletedProcess(["git", *args], 1, b"", str(exc).encode())


def target_ref(environ: Mapping[str, str]) -> str | None:
    """The pull request's target branch as the CI names it (GitHub ``GITHUB_BASE_REF``, Azure Pipelines
    ``SYSTEM_PULLREQUEST_TARGETBRANCH``), or None outside a pull request build."""
    branch = environ.get("GITHUB_BASE_REF") or environ.get("SYSTEM_PULLREQUEST_TARGETBRANCH") or ""
    branch = branch.removeprefix("refs/heads/").strip()
    return branch or None


def resolve_base(changed_since: str | None, environ: Mapping[str, str], where: Path, *,
                 base_only: bool = False) -> CacheBase | None:
    """The base the cassettes are compared with: ``--changed-since REF``, else the CI's target branch (tried as
    ``origin/<branch>``, then ``<branch>``). None when there is none or git cannot tell (then provenance is not
    reported rather than reported as zero); with ``base_only`` that is bad usage (exit 2)."""
    branch = target_ref(environ)
    candidates = [changed_since] if changed_since else [f"origin/{branch}", branch] if branch else []
    top = None
    if candidates:
        top_proc = _git(where, "rev-parse", "--show-toplevel")
        top = Path(os.fsdecode(top_proc.stdout).strip()) if top_proc.returncode == 0 else None
    for ref in candidates:
        if top is None or not ref or ref.startswith("-"):
            break
        proc = _git(top, "merge-base", ref, "HEAD")
        if proc.returncode == 0 and proc.stdout.strip():
            return CacheBase(os.fsdecode(proc.stdout).strip(), ref, top, base_only)
    if base_only:
        raise UsageError("--llm-cache-base-only needs the base branch to compare the cassettes with: pass "
                         "--changed-since REF (e.g. origin/main) in a git checkout with that branch fetched")
    if candidates:
        log.warning("LLM cache: cannot find the base %s in git (fetch it; fetch-depth: 0 on GitHub, fetchDepth: 0 on "
                    "Azure Pipelines), so replayed answers recorded in this change are not counted",
                    " or ".join(str(c) for c in candidates))
    return None


def _entries(text: str | None) -> dict[str, str]:
    """key -> the recorded answer (canonical JSON) of a cassette's text; empty when absent or unreadable."""
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    out: dict[str, str] = {}
    for entry in data.get("entries", []) if isinstance(data, dict) and isinstance(data.get("entries"), list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            out[entry["key"]] = _canonical({k: v for k, v in entry.items() if k != "recorded_at"})
    return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _at_base(base: CacheBase, path: Path) -> str | None:
    try:
        rel = Path(os.path.realpath(path)).relative_to(os.path.realpath(base.top)).as_posix()
    except ValueError:
        return None  # a cassette outside the repository has no base version
    proc = _git(base.top, "cat-file", "blob", f"{base.commit}:{rel}")
    return proc.stdout.decode("utf-8", errors="replace") if proc.returncode == 0 else None


def provenance(cassette: Path, base: CacheBase) -> CassetteProvenance:
    """Which entries of ``cassette`` are as on the base, and which this change added or altered."""
    try:
        now = _entries(cassette.read_text(encoding="utf-8")) if cassette.is_file() else {}
    except (OSError, UnicodeDecodeError):
        now = {}
    before = _entries(_at_base(base, cassette))
    same = frozenset(k for k, v in now.items() if before.get(k) == v)
    return CassetteProvenance(base.commit, frozenset(now) - same, same, base.base_only)
