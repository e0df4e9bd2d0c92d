"""Data sets (JSON Lines, CSV, JSON): do they parse, which columns do they have, on which lines."""

from __future__ import annotations

import csv
import json
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

SUFFIXES = (".jsonl", ".csv", ".tsv", ".json")
LINE_NUMBER = "line_number"  # prompt flow's own line key: a data column of this name numbers the lines


MAX_LINE = 10_000_000  # characters in one line (one data row); a longer one is refused, not read into memory
MAX_JSON = 200_000_000  # characters in a whole .json data file (it is parsed in one piece)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_BOM = "\ufeff"


class LineTooLong(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


@dataclass
class DataInfo:
    path: Path
    rows: int = 0
    columns: dict[str, int] = field(default_factory=dict)  # column -> how many rows have it
    first_missing: dict[str, int] = field(default_factory=dict)  # column -> first line lacking it
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line, message), at most a few
    error_count: int = 0
    fatal: str | None = None  # the file cannot be used at all
    line_number_problem: tuple[int, str] | None = None  # (line, what): a line_number prompt flow cannot key by
    # per column, the index of the last row that had it; row index -> line number (for first_missing)
    _last: dict[str, int] = field(default_factory=dict, repr=False)
    _lines: list[int] = field(default_factory=list, repr=False)
    _numbers: set[int] = field(default_factory=set, repr=False)  # the line_number values met so far

    def note_error(self, line: int, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < 3:
            self.errors.append((line, message))

    def note_line_number(self, line: int, row: dict[str, Any]) -> None:
        """Prompt flow takes a ``line_number`` column as each line's number and keys the lines by it: lines with the
        same number become one. Keeps the first line whose number is a repeat, not a whole number, or missing while
        other rows have one."""
        seen = self.columns.get(LINE_NUMBER, 0)  # rows before this one that had it
        if self.line_number_problem is not None or (LINE_NUMBER not in row and not seen):
            return
        raw = row.get(LINE_NUMBER)
        value = int(raw) if isinstance(raw, str) and raw.strip().isdigit() else raw  # CSV text, as pandas reads it
        if LINE_NUMBER not in row:
            what = "no line_number while the lines before it have one"
        elif seen != self.rows:
            what = f"line_number {raw!r} while a line before it has none"
        elif type(value) is not int or value < 0:
            what = f"line_number {raw!r}, not a whole number"
        elif value in self._numbers:
            what = f"line_number {raw!r}, which a line before it has too"
        else:
            self._numbers.add(value)
            return
        self.line_number_problem = (line, what)

    def missing_in(self, column: str) -> int:
        return self.rows - self.columns.get(column, 0)

    def _add_row(self, line: int, keys: list[str]) -> None:
        """Linear in the number of keys: a row's missing columns are found from the gaps, not by scanning."""
        index = self.rows
        self.rows += 1
        self._lines.append(line)
        for k in keys:
            last = self._last.get(k)
            if last == index:  # a name repeated in one row (a CSV header) counts once
                continue
            if last is None:
                if index > 0:
                    self.first_missing.setdefault(k, self._lines[0])
                self.columns[k] = 0
            elif last != index - 1 and k not in self.first_missing:
                self.first_missing[k] = self._lines[last + 1]
            self.columns[k] += 1
            self._last[k] = index

    def finish(self) -> None:
        for k, n in self.columns.items():
            if n < self.rows and k not in self.first_missing:
                self.first_missing[k] = self._lines[self._last[k] + 1]
        self._last.clear()
        self._lines.clear()
        self._numbers.clear()


def read_data(path: Path) -> DataInfo:
    """Read a data file (or a folder of them) in bounded memory; never blocks on a FIFO or reads a device."""
    info = DataInfo(path)
    try:
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES) if path.is_dir() else [path]
    except OSError as exc:
        info.fatal = f"cannot read the folder: {exc.strerror}"
        return info
    if not files:
        info.fatal = f"folder has no {', '.join(SUFFIXES)} files"
    for file in files:
        if file.suffix not in SUFFIXES:
            info.fatal = f"unsupported data format '{file.suffix or file.name}'; use .jsonl or .csv"
            break
        try:
            mode = file.stat().st_mode
        except OSError as exc:
            info.fatal = f"cannot read {file.name}: {exc.strerror}"
            break
        if not stat.S_ISREG(mode):
            info.fatal = (f"{file.name} is not a regular file (a FIFO, device or socket); point 'data:' at a "
                          ".jsonl or .csv file")
            break
        try:
            with file.open(encoding="utf-8", newline="") as fh:
                if file.suffix == ".jsonl":
                    _jsonl(_lines(fh), info)
                elif file.suffix == ".json":
                    _json(fh, info)
                else:
                    _csv(_lines(fh), info, "\t" if file.suffix == ".tsv" else ",")
        except LineTooLong as exc:
            info.fatal = (f"line {exc.line} is longer than {MAX_LINE:,} characters; split the data into "
                          "smaller rows")
        except UnicodeDecodeError as exc:
            info.fatal = f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8"
        except OSError as exc:
            info.fatal = f"cannot read: {exc.strerror}"
        if info.fatal:
            break
    if not info.fatal and info.rows == 0 and not info.error_count:
        info.fatal = "has no data rows; a run over it would run nothing: add at least one row"
    info.finish()
    return info


def _lines(fh: TextIO) -> Iterator[str]:
    """The file's lines, each at most MAX_LINE characters (LineTooLong otherwise)."""
    lineno = 0
    while True:
        line = fh.readline(MAX_LINE + 1)
        if not line:
            return
        lineno += 1
        if len(line) > MAX_LINE:
            raise LineTooLong(lineno)
        yield line


def _bom(text: str, info: DataInfo, lineno: int) -> bool:
    if lineno == 1 and text.startswith(_BOM):
        info.note_error(1, "starts with a byte order mark (BOM), which prompt flow cannot read in JSON data; save "
                        "the file as UTF-8 without BOM")
        return True
    return False


def _loads(text: str) -> tuple[Any, str | None]:
    """The parsed JSON or why not, for any text: huge numbers and deep nesting included."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return None, "not usable JSON: nested too deeply"
    except ValueError as exc:  # e.g. a number over Python's 4,300-digit limit
        why = "a number with more than 4,300 digits" if "limit" in str(exc) else str(exc)
        return None, f"not usable JSON: {why}; write it as a string"


def _surrogate(text: str, value: Any) -> bool:
    """True when a JSON escape produced a lone UTF-16 surrogate (not encodable as UTF-8)."""
    if not _SURROGATE_ESCAPE.search(text):
        return False
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# the integers pandas' JSON parser (prompt flow's reader) takes; one outside, at any depth, and it refuses the whole
# file ("Value is too big"), so prompt flow fails the run before any line
_INT_RANGE = (-2**63, 2**64 - 1)


def _int_too_big(value: Any) -> int | None:
    """The first integer in ``value`` pandas cannot read, or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool) and not _INT_RANGE[0] <= item <= _INT_RANGE[1]:
            return item
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _big_int_message(found: int) -> str:
    digits = str(found)
    shown = digits if len(digits) <= 30 else f"{digits[:12]}…({len(digits)} digits)"
    return (f"holds the integer {shown}, beyond the 64 bits prompt flow's reader (pandas) takes: it refuses the whole "
            "file and the run fails before any line; write it as a string (\"...\")")


_SURROGATE_MESSAGE = ("holds a lone UTF-16 surrogate escape (like \\ud800) that is not valid text; fix or remove "
                      "the broken character")


def _jsonl(lines: Iterator[str], info: DataInfo) -> None:
    for lineno, line in enumerate(lines, 1):
        if _bom(line, info, lineno):
            line = line[1:]
        if not line.strip():
            continue
        row, problem = _loads(line)
        if problem:
            info.note_error(lineno, problem)
            continue
        if not isinstance(row, dict):
            info.note_error(lineno, "each line must be a JSON object like {\"question\": \"...\"}")
            continue
        if _surrogate(line, row):
            info.note_error(lineno, _SURROGATE_MESSAGE)
            continue
        if (big := _int_too_big(row)) is not None:
            info.note_error(lineno, _big_int_message(big))
        info.note_line_number(lineno, row)
        info._add_row(lineno, list(row))


def _json(fh: TextIO, info: DataInfo) -> None:
    text = fh.read(MAX_JSON + 1)
    if len(text) > MAX_JSON:
        info.fatal = f"a .json data file over {MAX_JSON:,} characters; use JSON Lines (.jsonl) for large data"
        return
    if _bom(text, info, 1):
        text = text[1:]
    rows, problem = _loads(text)
    if problem:
        line = 1
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            line = exc.lineno
        except (ValueError, RecursionError):
            pass
        info.note_error(line, problem)
        return
    if not isinstance(rows, list):
        info.note_error(1, "a .json data file must hold a list of objects")
        return
    if _surrogate(text, rows):
        info.note_error(1, _SURROGATE_MESSAGE)
        return
    for i, row in enumerate(rows, 1):
        if isinstance(row, dict):
            if (big := _int_too_big(row)) is not None:
                info.note_error(1, f"item {i} {_big_int_message(big)}")
            info.note_line_number(1, row)
            info._add_row(i, list(row))
        else:
            info.note_error(1, f"item {i} is not an object")


def _csv(lines: Iterator[str], info: DataInfo, delimiter: str) -> None:
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            info.fatal = "the file is empty; a CSV data file needs a header row"
            return
        if header and header[0].startswith(_BOM):
            header[0] = header[0][1:]  # prompt flow reads CSV with pandas, which skips a BOM
        seen: set[str] = set()
        for name in header:
            if name in seen:
                info.note_error(1, f"column '{name}' appears twice in the header; rename one of them")
                break
            seen.add(name)
        for row in reader:
            if len(row) <= 1 and not "".join(row).strip():  # a blank line, which pandas skips; ",," is a row of ''
                continue
            if len(row) != len(header):
                info.note_error(reader.line_num, f"has {len(row)} fields, the header has {len(header)}")
                continue
            info.note_line_number(reader.line_num, dict(zip(header, row, strict=True)))
            info._add_row(reader.line_num, header)
    except csv.Error as exc:
        info.note_error(reader.line_num, f"broken CSV: {exc}")
