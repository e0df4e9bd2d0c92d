"""A batch run's data lines as prompt flow maps them, for the engines that map lines themselves (prompty, evaluators,
Agent Framework): data files read as prompt flow reads them, ``column_mapping`` applied over the data and a base
run, and a judge's metrics as the mean of its numeric outputs."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from llmops_ci.core.errors import UsageError
from llmops_ci.core.yamldoc import display_path
from llmops_ci.engines.artifacts import read_base
from llmops_ci.engines.data_rows import DataUnreadable, rows_of
from llmops_ci.project.data import LINE_NUMBER
from llmops_ci.results.records import LineResult

if TYPE_CHECKING:
    from llmops_ci.kinds.base import FlowInfo

REFERENCE = re.compile(r"^\$\{([^{}]+)\}$")
COMPLETED: Final = "Completed"


def base_run(bases: Path, name: str) -> dict[str, str]:
    """The kept run an evaluation scores (``read_base``), or the error that says how to get it kept."""
    found = read_base(bases, name)
    if found is None:
        raise UsageError(f"the run '{name}' to evaluate is not in {bases}; run batch-run again with the same "
                         "--state-dir")
    return found


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The data's lines as prompt flow reads them (``data_rows``: pandas' values and types), after checks that name
    the file and line of what no reader takes."""
    shown = display_path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{shown}: cannot read the data ({exc})") from None
    parsed: Any = None
    if path.suffix == ".json":
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{shown}: not valid JSON ({exc})") from None
        if not isinstance(parsed, list) or not all(isinstance(r, dict) for r in parsed):
            raise UsageError(f"{shown}: a .json data file must hold a list of objects")
    elif path.suffix not in (".csv", ".tsv"):
        parsed = []
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise UsageError(f"{shown}:{number}: not a JSON object ({exc})") from None
            if not isinstance(row, dict):
                raise UsageError(f"{shown}:{number}: each line must be a JSON object")
            parsed.append(row)
    try:
        return rows_of(path, raw, parsed)
    except DataUnreadable as exc:
        raise UsageError(f"{shown}: prompt flow's reader (pandas) cannot read it ({exc}); prompt flow fails such a "
                         "run as a whole: fix the value it names (an integer beyond 64 bits, say)") from None


def _numbered(rows: Any) -> bool:
    items = rows.values() if isinstance(rows, dict) else rows
    return any(isinstance(row, dict) and LINE_NUMBER in row for row in items)


def _by_line(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Rows keyed as prompt flow keys an input list: by their own ``line_number`` when any row has one (rows without
    are left out, a repeated number keeps the last row), else by position."""
    if not _numbered(rows):
        return dict(enumerate(rows))
    return {row[LINE_NUMBER]: row for row in rows if LINE_NUMBER in row}


def _outputs_by_line(path: Path) -> dict[int, dict[str, Any]]:
    out = {}
    for row in read_rows(path) if path.is_file() else []:
        number = row.pop(LINE_NUMBER, None)
        if isinstance(number, int):
            out[number] = row
    return out


def mapped_inputs(info: FlowInfo, mapping: Mapping[str, Any], rows: list[dict[str, Any]],
                  base: dict[str, str] | None, label: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, inputs) of each line to run, with ``mapping`` applied as prompt flow applies it."""
    full = {name: f"${{data.{name}}}" for name, spec in info.inputs.items() if not spec.has_default}
    full.update(mapping)
    sources: dict[str, dict[int, dict[str, Any]]] = {"data": _by_line(rows)}
    if base is not None:
        sources["run.outputs"] = _outputs_by_line(Path(base["outputs"]))
        sources["run.inputs"] = _by_line(read_rows(Path(base["data"])))
    positional = {name: len(source) for name, source in (("data", rows), *(
        (("run.inputs", sources["run.inputs"]),) if base is not None else ())) if not _numbered(source)}
    if len(set(positional.values())) > 1:  # prompt flow's InputMappingError ("Line numbers are not aligned")
        raise UsageError(f"{label}: the data and the base run's data have {positional.get('data')} and "
                         f"{positional.get('run.inputs')} lines and neither numbers them (a 'line_number' column): "
                         "prompt flow pairs them line by line and refuses this; give the evaluation data with one line "
                         "per line of the run's")
    numbers = sorted(set.intersection(*(set(s) for s in sources.values())))
    out, missing = [], set()
    for number in numbers:
        inputs: dict[str, Any] = {}
        for key, value in full.items():
            found = REFERENCE.match(value) if isinstance(value, str) else None
            if found is None:
                inputs[key] = value  # a literal
                continue
            parts = found.group(1).split(".")
            for i in range(1, len(parts)):
                source, field = ".".join(parts[:i]), ".".join(parts[i:])
                if source in sources and field in sources[source][number]:
                    inputs[key] = sources[source][number][field]
                    break
            else:
                missing.add(value)
        out.append((number, inputs))
    if missing:
        raise UsageError(f"{label}: column_mapping refers to {', '.join(sorted(missing))}, which the data "
                         f"{'or the base run ' if base else ''}does not have; map each input to an existing column "
                         "(${data.<column>}) or output (${run.outputs.<output>})")
    return out


def mean_scores(lines: list[LineResult]) -> dict[str, float]:
    """A judge's metrics: the mean of each output that is a number (or a numeric string, or a bool) on every line
    that completed; a prompty file has no aggregation of its own."""
    done = [line.outputs for line in lines if line.status == COMPLETED and isinstance(line.outputs, dict)]
    values: dict[str, list[float]] = {}
    for key in dict.fromkeys(k for outputs in done for k in outputs):
        numbers = [_number(outputs.get(key)) for outputs in done]
        if numbers and all(n is not None for n in numbers):
            values[key] = [n for n in numbers if n is not None]
    return {key: round(sum(v) / len(v), 4) for key, v in values.items()}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None
