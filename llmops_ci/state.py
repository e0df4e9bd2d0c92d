"""The state directory and its ``summary.json``: always valid JSON, replaced atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from llmops_ci import redaction
from llmops_ci.errors import UsageError

SCHEMA = "llmops-ci/summary@1"


def read_summary(state_dir: Path) -> dict[str, Any]:
    path = state_dir / "summary.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"schema": SCHEMA}
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a readable summary ({exc}); delete it or pass another --state-dir") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UsageError(f"{path}: not an llmops-ci summary (schema {SCHEMA}); pass another --state-dir")
    return data


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` redacted of every known secret, written whole or not at all."""
    data = redaction.redact_data(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update_summary(state_dir: Path, section: str, value: Any) -> dict[str, Any]:
    """Replace one top-level section of summary.json, keeping the others."""
    data = read_summary(state_dir)
    data[section] = value
    write_json_atomic(state_dir / "summary.json", data)
    return data
