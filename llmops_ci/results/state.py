"""The state directory and its ``summary.json``: always valid JSON, replaced atomically, updated under a lock.

Steps can run as parallel CI jobs (or two flows' runs at once) against one state dir, so every
update is read-modify-write under an exclusive ``flock`` on a lock file beside the summary, and
every file is written to a uniquely named temp file first and renamed over the old one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from llmops_ci.core import redaction
from llmops_ci.core.errors import LlmopsError, UsageError
from llmops_ci.results.summary import Summary

SCHEMA = "llmops-ci/summary@1"
FILE_MODE = 0o644  # results are for every later step and the CI artifact upload, not secret


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None: JSON has no NaN, and a NaN must not look like a number."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps_line(value: Any) -> str:
    """One JSON Lines record: valid JSON (no NaN), anything unknown as its text."""
    return json.dumps(finite(redaction.redact_data(value)), default=str, allow_nan=False)


def check_summary(data: Any, where: str) -> dict[str, Any]:
    """``data`` when it has the shape of an llmops-ci summary, else UsageError naming ``where``."""
    again = "delete it (or pass another --state-dir) and run the steps again"
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UsageError(f"{where}: not an llmops-ci summary (schema {SCHEMA}); {again}")
    flows = data.get("flows", {})
    if not isinstance(flows, dict):
        raise UsageError(f"{where}: 'flows' must be an object of flow results, not {type(flows).__name__}; {again}")
    for name, entry in flows.items():
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: flow '{name}' must be an object, not {type(entry).__name__}; {again}")
        for section in ("run", "evaluations", "gate", "register", "deploy", "unchanged"):
            if section in entry and entry[section] is not None and not isinstance(entry[section], dict):
                raise UsageError(f"{where}: '{section}' of flow '{name}' must be an object; {again}")
        _check_counts(as_dict_or_empty(entry.get("run")), f"flow '{name}' run", where, again)
        checks = as_dict_or_empty(entry.get("gate")).get("checks")
        if checks is not None and (not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks)):
            raise UsageError(f"{where}: 'gate.checks' of flow '{name}' must be a list of objects; {again}")
        for ename, evaluation in (entry.get("evaluations") or {}).items():
            if not isinstance(evaluation, dict) or not isinstance(evaluation.get("metrics") or {}, dict):
                raise UsageError(f"{where}: evaluation '{ename}' of flow '{name}' must be an object with "
                                 f"'metrics'; {again}")
            _check_counts(evaluation, f"evaluation '{ename}' of flow '{name}'", where, again)
    lint = data.get("lint", {})
    if not isinstance(lint, dict) or not isinstance(lint.get("findings", []), list):
        raise UsageError(f"{where}: 'lint' must be an object with a list of 'findings'; {again}")
    return data


_COUNTS = ("lines_total", "lines_failed", "repeats")
_CACHE_COUNTS = ("hits", "misses", "recorded", "recorded_in_change", "tokens_saved")


def as_dict_or_empty(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _check_counts(run: dict[str, Any], what: str, where: str, again: str) -> None:
    """Counts every step does arithmetic with: whole numbers, not 1e999, text or lists (a tampered baseline)."""
    cache = run.get("llm_cache")
    if cache is not None and not isinstance(cache, dict):
        raise UsageError(f"{where}: 'llm_cache' of {what} must be an object; {again}")
    fields = [(k, run.get(k)) for k in _COUNTS if run.get(k) is not None]
    fields += [(f"llm_cache.{k}", v) for k, v in as_dict_or_empty(cache).items() if k in _CACHE_COUNTS]
    for key, value in fields:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
            raise UsageError(f"{where}: '{key}' of {what} must be a whole number of at least 0, not "
                             f"{json.dumps(value, default=str)[:40]}; {again}")
    duration = run.get("duration_s")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                 or not math.isfinite(duration)):
        raise UsageError(f"{where}: 'duration_s' of {what} must be a number of seconds; {again}")


class DiskError(LlmopsError):
    """The machine, not the input: the disk under the state dir is full (exit 3, like an outside service)."""

    return_code = 3


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def disk_error(exc: OSError) -> LlmopsError | None:
    """A full, read-only or forbidden file system as a message saying what to do; None for other OSErrors."""
    where = exc.filename or "a file under the state dir"
    if exc.errno in _FULL:
        return DiskError(f"cannot write {where}: {exc.strerror or 'no space left on the device'}; free space on "
                         "that disk (or pass --state-dir on another one) and run the step again")
    if exc.errno in _UNWRITABLE:
        return UsageError(f"cannot write {where}: {exc.strerror or 'not writable'}; pass a --state-dir this user "
                          "may write to (a read-only checkout cannot hold the state dir)")
    return None


def read_json_file(path: Path, what: str, kind: str = "readable JSON") -> Any:
    """A JSON file, or UsageError naming it (never blocks on a FIFO; huge numbers and deep nesting included)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise UsageError(f"{path}: not a regular file; {what}")
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(f"{path}: not {kind} ({str(exc)[:200]}); {what}") from None


def read_summary(state_dir: Path) -> dict[str, Any]:
    """summary.json as JSON, for changing it (``modify_summary``) or carrying parts of it over as they are."""
    path = state_dir / "summary.json"
    try:
        data = read_json_file(path, "delete it or pass another --state-dir", "a readable summary")
    except FileNotFoundError:
        return {"schema": SCHEMA}
    return check_summary(data, str(path))


def load_summary(state_dir: Path) -> Summary:
    """summary.json as typed values, for reading (the report, the gate, the release steps)."""
    return Summary.parse(read_summary(state_dir))


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = FILE_MODE) -> Iterator[TextIO]:
    """A text file that replaces ``path`` in one rename when the block ends (and is removed if it fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` without any known secret and without NaN, written whole or not at all."""
    with atomic_writer(path) as fh:
        json.dump(finite(redaction.redact_data(data)), fh, indent=2, sort_keys=False, allow_nan=False)
        fh.write("\n")


@contextlib.contextmanager
def summary_lock(state_dir: Path) -> Iterator[None]:
    """Exclusive across processes for one read-modify-write: flock on the state dir itself (a lock file would be
    one more file in the CI artifact, and summary.json's own inode changes with every rename)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def modify_summary(state_dir: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply ``change`` to summary.json under the lock, so concurrent steps never lose each other's results."""
    with summary_lock(state_dir):
        data = read_summary(state_dir)
        change(data)
        write_json_atomic(state_dir / "summary.json", data)
    return data


def update_summary(state_dir: Path, section: str, value: Any) -> dict[str, Any]:
    """Replace one top-level section of summary.json, keeping the others."""
    return modify_summary(state_dir, lambda data: data.__setitem__(section, value))


def update_flow(state_dir: Path, flow: str, key: str, value: Any) -> dict[str, Any]:
    """Set one key of one flow's entry ("evaluations" are merged by name)."""
    def change(data: dict[str, Any]) -> None:
        entry = data.setdefault("flows", {}).setdefault(flow, {})
        if key == "evaluations":
            if not isinstance(entry.get("evaluations"), dict):
                entry["evaluations"] = {}
            entry["evaluations"].update(value)
        else:
            entry[key] = value

    return modify_summary(state_dir, change)


def start_flow(state_dir: Path, flow: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Replace one flow's entry: a new batch run makes its evaluations, gate and release results stale."""
    return modify_summary(state_dir, lambda data: data.setdefault("flows", {}).__setitem__(flow, entry))


def start_evaluations(state_dir: Path, flow: str, entries: dict[str, Any]) -> dict[str, Any]:
    """Set evaluations that are starting; the flow's gate (and what followed it) judged the ones before."""
    def change(data: dict[str, Any]) -> None:
        entry = data.setdefault("flows", {}).setdefault(flow, {})
        if not isinstance(entry.get("evaluations"), dict):
            entry["evaluations"] = {}
        entry["evaluations"].update(entries)
        for stale in ("gate", "register", "deploy"):
            entry.pop(stale, None)

    return modify_summary(state_dir, change)


def record_step(state_dir: Path, step: str, code: int, error: str | None) -> None:
    """Note how a step ended when it did not pass (exit 1: a check failed; 2, 3: it stopped on bad input or a dead
    service): the report must not be green after it. A step that passes clears the note an earlier attempt left."""
    def change(data: dict[str, Any]) -> None:
        steps = data.get("steps") if isinstance(data.get("steps"), dict) else {}
        assert isinstance(steps, dict)
        if code == 0:
            steps.pop(step, None)
            if isinstance(data.get("interrupted"), dict) and data["interrupted"].get("step") == step:
                data.pop("interrupted")  # the step ran through this time
        else:
            steps[step] = {"exit_code": code, "error": error}
        if steps:
            data["steps"] = steps
        else:
            data.pop("steps", None)

    if not (state_dir / "summary.json").is_file() and (code == 0 or not state_dir.is_dir()):
        return  # nothing to clear, or a step that stopped before any state dir existed: none is made for it
    modify_summary(state_dir, change)


def fresh_summary(state_dir: Path) -> None:
    """Start summary.json over: ``pr`` reports what it runs now, not what earlier steps (of this config or another
    sharing the state dir) left behind."""
    if not (state_dir / "summary.json").exists():
        return
    with summary_lock(state_dir):
        write_json_atomic(state_dir / "summary.json", {"schema": SCHEMA})
