"""Read a finished prompt flow run from its folder (``<home>/.runs/<name>``) without importing promptflow."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from llmops_ci.core.schema import as_dict
from llmops_ci.core.service_errors import service_failure
from llmops_ci.results.records import LineResult, line_status

FAILED = ("Failed", "Canceled")


@dataclass
class RunArtifacts:
    lines: list[LineResult] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def _seconds(start: Any, end: Any) -> float | None:
    try:
        return (datetime.fromisoformat(str(end).replace("Z", "+00:00"))
                - datetime.fromisoformat(str(start).replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return None


def _records(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for raw in path.read_text(encoding="utf-8").splitlines():
            if raw.strip():
                out.append(json.loads(raw))
    return out


def count_lines_done(run_dir: Path) -> int:
    """Lines finished so far (each line's result lands in its own file while the run goes on)."""
    folder = run_dir / "flow_artifacts"
    return sum(1 for _ in folder.glob("*.jsonl")) if folder.is_dir() else 0


def read_run(run_dir: Path) -> RunArtifacts:
    failing_node: dict[int, str] = {}
    node_root = run_dir / "node_artifacts"
    for node_dir in sorted(node_root.iterdir()) if node_root.is_dir() else []:
        for rec in _records(node_dir):
            info = as_dict(rec.get("run_info"))
            line = rec.get("line_number")
            # the first failing node is the cause; later ones are usually Canceled by it
            if isinstance(line, int) and info.get("status") in FAILED and (
                    line not in failing_node or info.get("status") == "Failed"):
                failing_node[line] = str(rec.get("NodeName") or info.get("node") or node_dir.name)
    result = RunArtifacts()
    for rec in _records(run_dir / "flow_artifacts"):
        info = as_dict(rec.get("run_info"))
        metrics = as_dict(info.get("system_metrics"))
        error = as_dict(info.get("error"))
        line = int(rec.get("line_number", info.get("index", -1)))
        duration = metrics.get("duration")
        if not isinstance(duration, (int, float)):
            duration = _seconds(info.get("start_time"), info.get("end_time"))
        inputs = {k: v for k, v in as_dict(info.get("inputs")).items() if k != "line_number"}
        result.lines.append(LineResult(
            line=line, status=line_status(info.get("status") or rec.get("status"), "prompt flow"), inputs=inputs,
            outputs=info.get("output"), duration_s=float(duration) if duration is not None else None,
            tokens={k: int(metrics.get(f"{k}_tokens") or 0) for k in ("prompt", "completion", "total")},
            error=error.get("message"), error_code=as_dict(error.get("innerError")).get("code") or error.get("code"),
            node=failing_node.get(line) if error else None,
            service_failure=service_failure(error) if error else None))
    result.lines.sort(key=lambda r: r.line)
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        result.metrics = as_dict(json.loads(metrics_file.read_text(encoding="utf-8")))
    return result


# --- what a later run over a run reads: ``<state>/runs/.base/<run>/``, kept by runs.keep_base ------------------

def read_base(bases: Path, name: str) -> dict[str, str] | None:
    """``{"outputs": <outputs.jsonl>, "data": <data path>}`` of a kept run, or None when it is not kept."""
    folder = bases / name
    try:
        data = json.loads((folder / "llmops-run.json").read_text("utf-8"))["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {"outputs": str(folder / "outputs.jsonl"), "data": str(data)}
