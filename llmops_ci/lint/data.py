"""Data sets (JSON Lines, CSV, JSON): do they parse, which columns do they have, on which lines."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

SUFFIXES = (".jsonl", ".csv", ".tsv", ".json")


@dataclass
class DataInfo:
    path: Path
    rows: int = 0
    columns: dict[str, int] = field(default_factory=dict)  # column -> how many rows have it
    first_missing: dict[str, int] = field(default_factory=dict)  # column -> first line lacking it
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line, message), at most a few
    error_count: int = 0
    fatal: str | None = None  # the file cannot be used at all

    def note_error(self, line: int, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < 3:
            self.errors.append((line, message))

    def missing_in(self, column: str) -> int:
        return self.rows - self.columns.get(column, 0)

    def _add_row(self, line: int, keys: list[str]) -> None:
        self.rows += 1
        for k in keys:
            self.columns[k] = self.columns.get(k, 0) + 1
        for k in self.columns:
            if k not in keys and k not in self.first_missing:
                self.first_missing[k] = line

    def finish(self) -> None:
        for k, n in self.columns.items():
            if n < self.rows and k not in self.first_missing:
                self.first_missing[k] = 1


def read_data(path: Path) -> DataInfo:
    info = DataInfo(path)
    files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES) if path.is_dir() else [path]
    if not files:
        info.fatal = f"folder has no {', '.join(SUFFIXES)} files"
    for file in files:
        if file.suffix not in SUFFIXES:
            info.fatal = f"unsupported data format '{file.suffix or file.name}'; use .jsonl or .csv"
            break
        try:
            with file.open(encoding="utf-8-sig", newline="") as fh:
                if file.suffix == ".jsonl":
                    _jsonl(fh, info)
                elif file.suffix == ".json":
                    _json(fh.read(), info)
                else:
                    _csv(fh, info, "\t" if file.suffix == ".tsv" else ",")
        except UnicodeDecodeError as exc:
            info.fatal = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        except OSError as exc:
            info.fatal = f"cannot read: {exc.strerror}"
    info.finish()
    return info


def _jsonl(fh, info: DataInfo) -> None:  # type: ignore[no-untyped-def]
    for lineno, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            info.note_error(lineno, f"not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(row, dict):
            info.note_error(lineno, "each line must be a JSON object like {\"question\": \"...\"}")
            continue
        info._add_row(lineno, list(row))


def _json(text: str, info: DataInfo) -> None:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        info.note_error(exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})")
        return
    if not isinstance(rows, list):
        info.note_error(1, "a .json data file must hold a list of objects")
        return
    for i, row in enumerate(rows, 1):
        if isinstance(row, dict):
            info._add_row(i, list(row))
        else:
            info.note_error(1, f"item {i} is not an object")


def _csv(fh, info: DataInfo, delimiter: str) -> None:  # type: ignore[no-untyped-def]
    reader = csv.reader(fh, delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            info.fatal = "the file is empty; a CSV data file needs a header row"
            return
        if len(set(header)) != len(header):
            dup = next(h for h in header if header.count(h) > 1)
            info.note_error(1, f"column '{dup}' appears twice in the header")
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                info.note_error(reader.line_num, f"has {len(row)} fields, the header has {len(header)}")
                continue
            info._add_row(reader.line_num, header)
    except csv.Error as exc:
        info.note_error(reader.line_num, f"broken CSV: {exc}")
