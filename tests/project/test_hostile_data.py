"""Hostile data files: FIFOs, devices, huge lines, surrogates, BOMs, 60k keys: a located finding, bounded."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.project import data as data_mod
from llmops_ci.project.data import DataInfo, read_data
from tests.conftest import CliResult, Project


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _read_bounded(path: Path) -> DataInfo:
    """read_data in a thread: a blocking read (a FIFO nobody writes to) fails the test instead of hanging it."""
    result: list[DataInfo] = []
    worker = threading.Thread(target=lambda: result.append(read_data(path)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), f"read_data({path}) blocked"
    return result[0]


def test_a_fifo_is_not_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "d.jsonl"
    os.mkfifo(fifo)
    assert "not a regular file" in (_read_bounded(fifo).fatal or "")
    folder = tmp_path / "folder"
    folder.mkdir()
    os.mkfifo(folder / "a.jsonl")
    assert "not a regular file" in (_read_bounded(folder).fatal or "")


def test_a_symlink_to_a_device_is_not_read(tmp_path: Path) -> None:
    link = tmp_path / "d.jsonl"
    link.symlink_to("/dev/zero")
    assert "not a regular file" in (_read_bounded(link).fatal or "")


def test_a_huge_line_is_refused_without_reading_it_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_mod, "MAX_LINE", 1000)
    path = _write(tmp_path, "d.jsonl", '{"a": 1}\n{"a": "' + "x" * 5000 + '"}\n')
    info = read_data(path)
    assert info.fatal is not None and "line 2 is longer than 1,000 characters" in info.fatal
    csv_path = _write(tmp_path, "d.csv", "a\n" + "y" * 5000 + "\n")
    assert "line 2 is longer" in (read_data(csv_path).fatal or "")


@pytest.mark.parametrize(("text", "line", "says"), [
    ('{"a": 1}\n{"a": "\\ud800"}\n', 2, "lone UTF-16 surrogate"),
    ('{"a": 1}\n{"a": ' + "1" * 5000 + "}\n", 2, "not usable JSON"),
    ('{"a": 1}\n' + "[" * 100_000 + "]" * 100_000 + "\n", 2, "nested too deeply"),
    ('{"a": 1}\n"just text"\n', 2, "must be a JSON object"),
    ('{"a": 1}\nnull\n', 2, "must be a JSON object"),
    ('\ufeff{"a": 1}\n', 1, "byte order mark"),
])
def test_bad_jsonl_lines_are_located(tmp_path: Path, text: str, line: int, says: str) -> None:
    info = read_data(_write(tmp_path, "d.jsonl", text))
    assert info.fatal is None
    assert [(n, says in m) for n, m in info.errors] == [(line, True)], info.errors


@pytest.mark.parametrize(("value", "refused"), [
    ("18446744073709551615", False), ("18446744073709551616", True), ("-9223372036854775808", False),
    ("-9223372036854775809", True), ("[1, 123456789012345678901234567890]", True),
    ('{"x": -99999999999999999999}', True), ("1e400", False),
])
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_an_integer_prompt_flow_s_reader_refuses_is_located(value: str, refused: bool, suffix: str,
                                                            tmp_path: Path) -> None:
    """Exactly the files prompt flow's reader (pandas) refuses as a whole: an integer beyond 64 bits at any depth."""
    import warnings

    from promptflow._utils.load_data import load_data

    rows = ['{"a": "x"}', f'{{"a": {value}}}']
    path = tmp_path / f"d{suffix}"
    path.write_text("\n".join(rows) + "\n" if suffix == ".jsonl" else f"[{', '.join(rows)}]", encoding="utf-8")
    info = read_data(path)
    said = [(line, message) for line, message in info.errors if "64 bits" in message]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            load_data(local_path=path)
            pf_refused = False
        except Exception:  # prompt flow's InvalidUserData
            pf_refused = True
    assert pf_refused == refused
    assert bool(said) == refused
    if refused:
        assert said[0][0] == (2 if suffix == ".jsonl" else 1)
        assert suffix == ".jsonl" or "item 2" in said[0][1]


def test_a_valid_surrogate_pair_is_fine(tmp_path: Path) -> None:
    info = read_data(_write(tmp_path, "d.jsonl", '{"a": "\\ud83d\\ude00"}\n'))
    assert info.errors == [] and info.rows == 1


def test_bom_in_json_and_csv(tmp_path: Path) -> None:
    info = read_data(_write(tmp_path, "d.json", '\ufeff[{"a": 1}]'))
    assert "byte order mark" in info.errors[0][1]
    info = read_data(_write(tmp_path, "d.csv", "\ufefftext,label\na,b\n"))  # prompt flow reads this fine
    assert info.errors == [] and set(info.columns) == {"text", "label"}


def test_empty_data_is_a_finding(tmp_path: Path) -> None:
    for name, text in (("e.jsonl", ""), ("b.jsonl", "\n\n  \n"), ("h.csv", "text,label\n"), ("l.json", "[]")):
        assert "has no data rows" in (read_data(_write(tmp_path, name, text)).fatal or ""), name


def test_column_checks_are_linear_in_the_keys(tmp_path: Path) -> None:
    """60k keys on one line, then 60k lines of one key: quadratic bookkeeping would take hours."""
    wide = {f"k{i}": i for i in range(60_000)}
    lines = [json.dumps(wide)] + [json.dumps({"k1": 1}) for _ in range(60_000)] + [json.dumps(wide)]
    info = _read_bounded(_write(tmp_path, "d.jsonl", "\n".join(lines) + "\n"))
    assert info.rows == 60_002
    assert info.columns["k1"] == 60_002 and info.columns["k0"] == 2
    assert info.first_missing["k0"] == 2 and "k1" not in info.first_missing
    header = ",".join(f"c{i}" for i in range(60_000))
    csv_info = _read_bounded(_write(tmp_path, "d.csv", header + ",c7\n" + ",".join(["1"] * 60_001) + "\n"))
    assert "column 'c7' appears twice" in csv_info.errors[0][1]


def test_first_missing_is_the_first_gap(tmp_path: Path) -> None:
    info = read_data(_write(tmp_path, "d.jsonl", '{"a": 1, "b": 1}\n{"a": 1, "b": 1}\n{"a": 1}\n{"a": 1, "b": 1}\n'
                            '{"a": 1}\n{"c": 1, "a": 2}\n'))
    assert info.first_missing == {"b": 3, "c": 1}
    assert info.missing_in("b") == 3 and info.missing_in("c") == 5


def test_csv_oddities(tmp_path: Path) -> None:
    info = read_data(_write(tmp_path, "d.csv", 'a,b\n1,2\n"unterminated,3\n'))
    assert info.rows == 1 or info.errors  # csv keeps reading the quoted field to the end: never a crash
    big = read_data(_write(tmp_path, "f.csv", "a\n" + '"' + "z" * 200_000 + '"\n'))
    assert "broken CSV" in big.errors[0][1] and big.errors[0][0] == 2
    nul = read_data(_write(tmp_path, "n.csv", "a,b\n1,\x002\n"))
    assert nul.fatal is None  # a NUL is a character like any other for the csv module


@pytest.mark.parametrize("text", [
    "a,b\n1,2\n,\n", "a,b\n1,2\n\n3,4\n", "a,b\n1,2\n   \n3,4\n", "a,b\r\n1,2\r\n\r\n", "a\n1\n\n2\n",
    "a,b\n , \n", 'a,b\n"",""\n',
])
def test_csv_rows_are_the_rows_prompt_flow_reads(text: str, tmp_path: Path) -> None:
    """Lint counts the rows prompt flow's reader (pandas) gives, which the run's lines are numbered against: a
    line of delimiters only is a row of empty values, a blank line is no row."""
    import warnings

    from promptflow._utils.load_data import load_data

    path = _write(tmp_path, "d.csv", text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert read_data(path).rows == len(load_data(local_path=path))


def test_hostile_data_through_lint_and_batch_run(project: Callable[..., Project],
                                                 cli: Callable[..., CliResult]) -> None:
    proj = project()
    data = proj.path("data/classify.jsonl")
    data.unlink()
    os.mkfifo(data)
    result = cli("lint", "--config", "llmops.yaml")
    assert result.code == 1 and "not a regular file" in result.out
    result = cli("batch-run", "--config", "llmops.yaml")
    assert result.code == 2 and "data/classify.jsonl" in result.err and "not a regular file" in result.err
    assert "Traceback" not in result.err
    data.unlink()
    data.write_text('{"text": "ok", "label": "App"}\n{"text": "\\udc00", "label": "App"}\n', encoding="utf-8")
    result = cli("batch-run", "--config", "llmops.yaml")
    assert result.code == 2 and "data/classify.jsonl:2" in result.err and "surrogate" in result.err
