"""A data file's rows exactly as prompt flow's reader gives them (``promptflow._utils.load_data``: pandas with
``dtype=object``; azure-ai-evaluation's ``evaluate`` reads JSON Lines the same way), types included, so that every
engine hands a flow, an agent or an evaluator the values ``pf run`` would. Without pandas when the standard library
gives the very same rows (pandas' import is ~0.7 s); else with pandas, as prompt flow calls it."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

# column names pandas turns into numbers or timestamps (``convert_axes``) when every name of the file is one of
# these or reads as a number: a file keeps its names as they are when one name is a plain word not among them
_AXIS_WORDS = frozenset({"inf", "infinity", "nan", "nat", "today", "now"})


class DataUnreadable(ValueError):
    """pandas (prompt flow's reader) refuses the file: prompt flow fails such a run as a whole."""


def _names_kept(keys: list[str]) -> bool:
    return any(k.isascii() and k.isidentifier() and k.lower() not in _AXIS_WORDS for k in keys)


def _date_like(key: str) -> bool:
    """pandas.read_json turns such columns into timestamps (``keep_default_dates``)."""
    low = key.lower()
    return low.endswith(("_at", "_time")) or low in ("modified", "date", "datetime") or low.startswith("timestamp")


def _exact_in_pandas(value: Any) -> bool:
    """Whether pandas reads ``value`` (at any depth) as the very same Python value and type. Not a float: its JSON
    parser is not exact (1.7976931348623157e308 -> 1.7976931348623151e308, 5e-324 -> 0.0) and a column mixing floats
    with ints makes every int a float; not an int beyond int64."""
    if isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return -2**63 <= value < 2**63
    if isinstance(value, list):
        return all(_exact_in_pandas(v) for v in value)
    if isinstance(value, dict):
        return all(_exact_in_pandas(v) for v in value.values())
    return value is None  # null nested in a list or an object stays None; a float (NaN, Infinity too) does not pass


def exact_objects(rows: list[Any]) -> list[dict[str, Any]] | None:
    """``rows`` (parsed by ``json``) when pandas gives the very same dicts: every row an object with the same keys, no
    null column value, no date-like column name, names pandas keeps as they are, no float anywhere, ints within
    int64; in pandas' column order (the first row's)."""
    if not rows or not all(isinstance(r, dict) for r in rows):
        return None
    order = list(rows[0])
    keys = set(order)
    for row in rows:
        if set(row) != keys or any(v is None or not _exact_in_pandas(v) for v in row.values()):
            return None
    if any(_date_like(k) for k in keys) or not _names_kept(order):
        return None
    return [{k: row[k] for k in order} for row in rows]


def plain_jsonl(path: Path) -> list[dict[str, Any]] | None:
    """The rows of a ``.jsonl`` file when pandas (``dtype=object``, as prompt flow reads it) would give the very same
    dicts, types included (``exact_objects``); None: ask pandas."""
    if path.suffix != ".jsonl" or not path.is_file():
        return None
    try:
        return _plain(path.read_bytes(), path.suffix)
    except (OSError, ValueError):
        return None


def plain_csv(text: str, delimiter: str) -> list[dict[str, Any]] | None:
    """CSV/TSV rows when pandas (``dtype=object, keep_default_na=False``) would give the very same: strings, names
    unique and not empty, every row as long as the header, no line of blanks only (pandas skips it)."""
    if any(line.strip() == "" and line != "" for line in text.splitlines()):
        return None
    table = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    rows = [r for r in table if r]  # empty lines: skipped by both
    if not rows:
        return None
    header = rows[0]
    if len(set(header)) != len(header) or any(not name for name in header):
        return None
    if any(len(row) != len(header) for row in rows[1:]):
        return None
    return [dict(zip(header, row, strict=True)) for row in rows[1:]]


def pandas_rows(path: Path) -> list[dict[str, Any]]:
    """The rows as ``promptflow._utils.load_data.load_data`` gives them (its ``_pd_read_file``, promptflow 1.18.5)."""
    import pandas as pd  # type: ignore[import-untyped]

    if path.stat().st_size == 0:
        return []
    try:
        if path.suffix == ".csv":
            frame = pd.read_csv(path, dtype=object, keep_default_na=False)
        elif path.suffix == ".tsv":
            frame = pd.read_table(path, dtype=object, keep_default_na=False)
        elif path.suffix == ".json":
            frame = pd.read_json(path, dtype=object)
        else:
            frame = pd.read_json(path, dtype=object, lines=True)
    except ValueError as exc:
        raise DataUnreadable(str(exc)) from None
    return [row.to_dict() for _, row in frame.iterrows()]


def _plain(raw: bytes, suffix: str, parsed: Any = None) -> list[dict[str, Any]] | None:
    """The rows of a file's bytes read without pandas, when that gives what pandas gives; ``parsed``: its JSON
    (a .json file's value, a .jsonl file's line objects) when the caller has parsed it already."""
    if suffix in (".csv", ".tsv"):  # pandas skips a BOM in CSV, not in JSON
        return plain_csv(raw.decode("utf-8-sig"), "\t" if suffix == ".tsv" else ",")
    if raw.startswith(b"\xef\xbb\xbf"):
        return None
    if parsed is None:
        text = raw.decode("utf-8")
        parsed = json.loads(text) if suffix == ".json" else [json.loads(line) for line in text.split("\n")
                                                             if line.strip()]
    return exact_objects(parsed) if isinstance(parsed, list) else None


def rows_of(path: Path, raw: bytes | None = None, parsed: Any = None) -> list[dict[str, Any]]:
    """The rows of ``path`` (a file that parses; ``raw``/``parsed``: its bytes and JSON when read already) as prompt
    flow's reader gives them; ``DataUnreadable`` when it refuses the file."""
    found = _plain(path.read_bytes() if raw is None else raw, path.suffix, parsed)
    return found if found is not None else pandas_rows(path)
