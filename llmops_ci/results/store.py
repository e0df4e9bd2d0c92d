"""Where run results are kept: each run's ``run.json`` and ``lines.jsonl`` under the state dir, the outputs a run over
it reads, and flows carried over unchanged from a baseline."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from llmops_ci.core import redaction
from llmops_ci.core.errors import UsageError
from llmops_ci.core.safe_copy import copy_tree
from llmops_ci.core.schema import as_dict
from llmops_ci.results.provenance import now
from llmops_ci.results.records import LineResult, RunRecord
from llmops_ci.results.state import atomic_writer, dumps_line, read_summary, update_flow, write_json_atomic


def run_dir(state_dir: Path, flow: str, evaluation: str | None = None) -> Path:
    return state_dir / "runs" / flow / ("evals/" + evaluation if evaluation else "")


def save_run(state_dir: Path, record: RunRecord, allowed_failures: int | None,
             provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's summary (with ``provenance``: what ran, on which data, when) and its lines, kept under the state
    dir; ``finished`` is stamped here."""
    folder = run_dir(state_dir, record.flow, record.evaluation)
    folder.mkdir(parents=True, exist_ok=True)
    summary = record.summary(allowed_failures)
    summary.update({**(provenance or {}), "finished": now()})
    if record.metrics:
        summary["metrics"] = record.metrics
    write_json_atomic(folder / "run.json", summary)
    with atomic_writer(folder / "lines.jsonl") as fh:
        for line in record.lines + unrun_lines(record):
            fh.write(dumps_line(line.to_json()) + "\n")
    return summary


def unrun_lines(record: RunRecord) -> list[LineResult]:
    """A failed record for each line a run that failed as a whole never ran, so lines.jsonl holds as many records as
    ``lines_total`` counts."""
    if not record.failed_as_a_whole:
        return []
    ran = {line.line for line in record.lines}
    numbers = record.line_numbers if record.line_numbers is not None else list(range(record.lines_total))
    why = "not run: the run failed as a whole" + (
        f" ({textwrap.shorten(record.error, 300, placeholder='…')})" if record.error else "")
    # prompt flow's own status for a line that never started
    return [LineResult(n, "NotStarted", {}, None, None, {}, error=why) for n in numbers if n not in ran]


def base_dir(state_dir: Path, name: str) -> Path:
    """Where the run ``name`` keeps what a run over it reads (``${run.outputs.x}``, ``${run.inputs.x}``)."""
    return state_dir.absolute() / "runs" / ".base" / name


def keep_base(state_dir: Path, record: RunRecord, data: Path) -> Path:
    """A batch run's completed outputs by line (``line_number`` plus the outputs, as pf.run keeps them) and its data,
    whatever its kind and backend: an evaluation flow of any kind can then score it. A line whose outputs are not
    an object keeps them as ``output``."""
    folder = base_dir(state_dir, record.name)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_writer(folder / "outputs.jsonl") as fh:
        for line in record.lines:
            if line.status == "Completed":
                outputs = line.outputs if isinstance(line.outputs, dict) else {"output": line.outputs}
                # as prompt flow's batch engine writes them (json.dump: NaN and Infinity kept, which its reader then
                # gives back), not as our own records (valid JSON): the evaluation gets what pf run's would
                fh.write(json.dumps(redaction.redact_data({**outputs, "line_number": line.line}), ensure_ascii=False,
                                    default=str) + "\n")
    write_json_atomic(folder / "llmops-run.json", {"data": str(data.absolute())})
    return folder


def load_run(state_dir: Path, flow: str, evaluation: str | None = None) -> dict[str, Any] | None:
    path = run_dir(state_dir, flow, evaluation) / "run.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: unreadable ({exc}); run batch-run again") from None
    return data if isinstance(data, dict) else None


def mark_unchanged(state_dir: Path, flow: str, since: str, reasons_elsewhere: str | None,
                   baseline_dir: Path | None) -> bool:
    """Record that ``flow`` was not run; carry its results over from the baseline state dir when there are any."""
    carried = False
    if baseline_dir is not None and (baseline_dir / "summary.json").is_file():
        base_flow = as_dict(as_dict(read_summary(baseline_dir).get("flows")).get(flow))
        for key in ("run", "evaluations"):
            if key in base_flow:
                update_flow_summary(state_dir, flow, key, base_flow[key])
                carried = True
        source = baseline_dir / "runs" / flow
        if source.is_dir():
            # records only llmops-ci writes: a link in them is a plant, never followed
            copy_tree(source, state_dir / "runs" / flow, dirs_exist_ok=True, root=source, skip_links=True)
    update_flow_summary(state_dir, flow, "unchanged", {"since": since, "carried_over": carried,
                                                       "baseline": str(baseline_dir) if carried else None})
    return carried


def update_flow_summary(state_dir: Path, flow: str, key: str, value: Any) -> None:
    update_flow(state_dir, flow, key, value)  # read-modify-write under the state dir's lock
