"""Flow ``repeats: k``: each data line runs k times, above every engine.

The run's data is the flow's data with each row written k times in a row (line ``r * k + i`` is repeat ``i``
of data line ``r``), so any engine runs it unchanged and its evaluations score every repeat; the LLM cache keys
a call by its repeat (``CacheSettings.repeats``), so a replay gives repeat i the answer recorded for repeat i.
Records are folded back to data lines (``line`` = r, ``repeat`` = i) before they are kept; the gate scores a
line by the mean of its repeats and reports the spread within lines.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from llmops_ci.config import FlowSpec
from llmops_ci.core.errors import UsageError
from llmops_ci.gate.keys import read_rows
from llmops_ci.results.records import RunJob, RunRecord
from llmops_ci.results.state import atomic_writer, dumps_line


def data_path(state_dir: Path, flow: str) -> Path:
    return state_dir.absolute() / "runs" / ".repeats" / f"{flow}.jsonl"


def write_data(state_dir: Path, flow: FlowSpec) -> Path:
    """The flow's data with every row ``flow.repeats`` times in a row, as JSON Lines."""
    assert flow.data is not None
    dest = data_path(state_dir, flow.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(dest) as fh:
        for row in read_rows(flow.data):
            line = dumps_line(row)
            for _ in range(flow.repeats):
                fh.write(line + "\n")
    return dest


def job(state_dir: Path, flow: FlowSpec, run_job: RunJob, *, write: bool) -> RunJob:
    """``run_job`` over the repeated data (written now for a batch run; an evaluation reads the batch run's)."""
    if flow.repeats == 1:
        return run_job
    data = write_data(state_dir, flow) if write else data_path(state_dir, flow.name)
    if not data.is_file():
        raise UsageError(f"flow '{flow.name}' has repeats: {flow.repeats} but its batch run in {state_dir} did not "
                         f"repeat its lines; run 'llmops-ci batch-run --flow {flow.name}' again")
    cache = dataclasses.replace(run_job.cache, repeats=flow.repeats) if run_job.cache is not None else None
    return dataclasses.replace(run_job, data=data, cache=cache)


def fold(record: RunRecord, repeats: int, data_lines: int | None) -> RunRecord:
    """Records of the repeated data back to data lines: ``line`` the data line, ``repeat`` which run of it."""
    if repeats == 1:
        return record
    for line in record.lines:
        line.line, line.repeat = divmod(line.line, repeats)
    record.lines.sort(key=lambda line: (line.line, line.repeat or 0))
    record.repeats = repeats
    record.data_lines = data_lines
    return record


def mean_by_line(records: list[tuple[int, Any]]) -> tuple[dict[int, float], float | None, int]:
    """(line -> mean score, the mean within-line standard deviation, the most repeats a line has) from
    ``(line, score)`` pairs where a line may appear once per repeat."""
    by_line: dict[int, list[float]] = {}
    for line, score in records:
        by_line.setdefault(line, []).append(float(score))
    means = {line: sum(v) / len(v) for line, v in by_line.items()}
    spreads = [(sum((x - means[line]) ** 2 for x in v) / (len(v) - 1)) ** 0.5 for line, v in by_line.items()
               if len(v) > 1]
    return means, (sum(spreads) / len(spreads) if spreads else None), max(map(len, by_line.values()), default=0)
