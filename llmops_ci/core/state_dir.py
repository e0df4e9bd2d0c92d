"""Whether a path can hold the state dir, checked before a step starts (standard library only: the CI wrappers
check it on the bare interpreter, before the install)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from llmops_ci.core.errors import UsageError


def state_dir_problem(path: Path) -> UsageError | None:
    """Why ``path`` cannot hold the state dir (a file or a dangling link in the way, a folder this user cannot
    write in), or None. Checked before a step starts; creates nothing (a probe folder is made and removed)."""
    advice = "pass --state-dir a folder this user can create and write (default: .llmops)"
    probe = path
    try:
        while not probe.exists():
            if probe.is_symlink():
                return UsageError(f"--state-dir {path}: {probe} is a link to nothing; {advice}")
            if probe == probe.parent:
                break
            probe = probe.parent
        if not probe.is_dir():
            where = "is a file" if probe == path else f"cannot be made: {probe} is a file"
            return UsageError(f"--state-dir {path}: {where}, not a folder; {advice}")
        os.rmdir(tempfile.mkdtemp(prefix=".llmops-probe-", dir=probe))
    except OSError as exc:
        return UsageError(f"--state-dir {path}: cannot write in {probe} ({exc.strerror or exc}); {advice}")
    return None
