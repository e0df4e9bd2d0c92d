"""``data_rows``: a data file's rows exactly as prompt flow's own reader (``load_data``: pandas, ``dtype=object``)
gives them, types included: without pandas when that gives the same (else nothing, and the reader runs), and with
pandas otherwise."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path
from typing import Any

import pytest

from llmops_ci.engines.data_rows import DataUnreadable, plain_jsonl, rows_of
from tests.helpers.pf_reference import same


def pf_reads(path: Path) -> list[dict[str, Any]]:
    from promptflow._utils.load_data import load_data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas' FutureWarnings on column names it converts
        return [dict(row) for row in load_data(local_path=path)]


@pytest.mark.parametrize(("text", "fast"), [
    ('{"a": 1, "b": "x", "c": [1, 2], "d": {"e": true}}\n{"a": 2, "b": "y", "c": [], "d": {}}\n', True),
    ('{"a": 1, "b": "x"}\n{"b": "y", "a": 2}\n', True),           # pandas' column order is the first line's
    ('{"a": [{"b": null}], "c": -9223372036854775808}\n', True),   # a null inside a value stays None
    ('{"a": 1, "b": "x"}\n{"a": 2}\n', False),                     # a missing key: pandas fills NaN
    ('{"a": 1, "b": null}\n', False),                              # null
    ('{"created_at": "2024-01-01", "a": 1}\n', False),             # a column pandas reads as a date
    ('\ufeff{"a": 1}\n', False),                                   # a BOM
    ('{"a": 123456789012345678901234567890}\n', False),            # beyond int64
    ('{"score": 4}\n{"score": 4.5}\n', False),                     # ints beside floats: pandas makes 4 a 4.0
    ('{"a": 1.7976931348623157e308}\n', False),                    # pandas' parser is not exact for floats
    ('{"a": {"e": 1.5}}\n', False),                                # nor inside a value
    ('{"a": NaN}\n', False),
    ('{"0": "x", "1": "y"}\n', False),                             # names pandas turns into numbers
    ('{"today": "x"}\n', False),                                   # ... or into a timestamp
    ('{"": "x"}\n', False),
])
def test_plain_jsonl_reads_exactly_what_prompt_flow_reads(text: str, fast: bool, tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(text, encoding="utf-8")
    rows = plain_jsonl(path)
    assert (rows is not None) == fast  # anything pandas would read differently goes to prompt flow's loader
    if fast:
        assert same(rows, pf_reads(path)), (rows, pf_reads(path))


VALUES = ['0', '1', '-1', '2.5', '1.0', '-0.0', '1e400', '9223372036854775807', '-9223372036854775808',
          '9223372036854775808', 'NaN', 'Infinity', 'true', 'false', 'null', '""', '"x"', '"1"', '"2020-01-01"',
          '"NaN"', '"now"', '[]', '[1, 2]', '{}', '{"a": 1}', '[1, 2.5]', '{"a": null}', '[null]', '"\\u0000"', '"é"',
          '1.7976931348623157e308', '5e-324', '12345678901234567', '[true, 1]', '{"k": [1, {"z": "q"}]}']
NAMES = ["question", "a", "b", "text", "id", "", "0", "1", "10", "today", "now", "nan", "inf", "x1", "created_at",
         "date", "é", "a b", "NaT", "q-1", "1.5"]


@pytest.mark.parametrize("seed", range(4))
def test_generated_files_read_as_prompt_flow_reads_them(seed: int, tmp_path: Path) -> None:
    """Files drawn from values and names where pandas is known to differ from ``json``: whatever the fast path
    accepts, it reads as prompt flow does."""
    rnd = random.Random(seed)
    accepted = 0
    for i in range(250):
        names = rnd.sample(NAMES, rnd.randint(1, 3))
        lines = []
        for _ in range(rnd.randint(1, 4)):
            order = rnd.sample(names, len(names)) if rnd.random() < 0.3 else names
            lines.append("{" + ", ".join(f"{json.dumps(n)}: {rnd.choice(VALUES)}" for n in order) + "}")
        path = tmp_path / f"{i}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        rows = plain_jsonl(path)
        if rows is None:
            continue
        accepted += 1
        theirs = pf_reads(path)
        assert same(rows, theirs), f"{path.read_text()}\nours:   {rows}\npandas: {theirs}"
    assert accepted >= 10  # the fast path was exercised, not only refused


@pytest.mark.parametrize(("name", "text"), [
    ("d.jsonl", '{"a": 1, "b": "x"}\n{"b": "y", "a": 2}\n'),
    ("d.jsonl", '{"score": 4}\n{"score": 4.5}\n'),
    ("d.jsonl", '{"a": 1, "b": "x"}\n{"a": 2}\n'),                 # pandas: NaN where a key is missing
    ("d.json", '[{"a": 1}, {"a": 2.5}]'),
    ("d.json", '[{"a": "x", "b": [1, true]}]'),
    ("d.csv", "a,b\n1,x\n2,\n"),
    ("d.csv", "\ufeffa,b\n1,x\n"),
    ("d.csv", 'a,b\n"x\ny",2\n'),                                  # a quoted line break stays in the value
    ("d.csv", "a,a\n1,2\n"),                                       # pandas: a, a.1
    ("d.csv", "a,b\n1\n"),
    ("d.csv", "a,b\n1,2\n   \n3,4\n"),
    ("d.csv", ",b\n1,2\n"),
    ("d.tsv", "a\tb\n1\tx y\n"),
])
def test_rows_of_gives_prompt_flow_s_rows(name: str, text: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert same(rows_of(path), pf_reads(path)), (rows_of(path), pf_reads(path))


@pytest.mark.parametrize("text", ['{"a": 123456789012345678901234567890}\n', '\ufeff{"a": "x"}\n'])
def test_a_file_prompt_flow_cannot_read_is_said_so(text: str, tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataUnreadable):
        rows_of(path)
    with pytest.raises(Exception, match="Fail to load invalid data"):
        pf_reads(path)


CSV_CELLS = ["1", "x", "", "  ", '"a,b"', '"x\ny"', '"q""q"', "NA", "null", "1.5", "é"]


@pytest.mark.parametrize("seed", range(3))
def test_generated_csv_files_read_as_prompt_flow_reads_them(seed: int, tmp_path: Path) -> None:
    rnd = random.Random(seed)
    for i in range(120):
        width = rnd.randint(1, 3)
        header = rnd.choice([["a", "b", "c"][:width], ["a", "a", "b"][:width], ["", "b", "c"][:width]])
        lines = [",".join(header)]
        for _ in range(rnd.randint(1, 4)):
            cells = [rnd.choice(CSV_CELLS) for _ in range(rnd.choice([width, width, width, width - 1, width + 1]))]
            lines.append(",".join(cells) if rnd.random() > 0.1 else "   ")
        path = tmp_path / f"{i}.csv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            theirs = pf_reads(path)
        except Exception:  # prompt flow refuses it: so must we
            with pytest.raises(DataUnreadable):
                rows_of(path)
            continue
        assert same(rows_of(path), theirs), f"{path.read_text()!r}\nours:   {rows_of(path)}\npandas: {theirs}"
