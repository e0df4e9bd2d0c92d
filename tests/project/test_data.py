from __future__ import annotations

from pathlib import Path

from llmops_ci.project.data import read_data


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_columns_and_bad_lines(tmp_path: Path) -> None:
    info = read_data(write(tmp_path, "d.jsonl", '{"a": 1, "b": 2}\n\n{"a": 3}\n{oops\n[1]\n{"a": 5, "b": 6}\n'))
    assert info.rows == 3
    assert info.columns == {"a": 3, "b": 2}
    assert info.missing_in("b") == 1 and info.first_missing["b"] == 3
    assert [line for line, _ in info.errors] == [4, 5]


def test_many_bad_lines_are_counted_not_listed(tmp_path: Path) -> None:
    info = read_data(write(tmp_path, "d.jsonl", "x\n" * 10))
    assert len(info.errors) == 3 and info.error_count == 10


def test_csv(tmp_path: Path) -> None:
    info = read_data(write(tmp_path, "d.csv", 'text,label\n"a, b",x\nc\n"multi\nline",y\n'))
    assert set(info.columns) == {"text", "label"} and info.rows == 2
    assert info.errors == [(3, "has 1 fields, the header has 2")]


def test_json_list_tsv_and_folder(tmp_path: Path) -> None:
    assert read_data(write(tmp_path, "d.json", '[{"q": 1}, {"q": 2}]')).rows == 2
    assert set(read_data(write(tmp_path, "d.tsv", "q\tz\n1\t2\n")).columns) == {"q", "z"}
    folder = tmp_path / "many"
    folder.mkdir()
    write(folder, "1.jsonl", '{"q": 1}\n')
    write(folder, "2.jsonl", '{"q": 2}\n')
    assert read_data(folder).rows == 2


def test_unusable_files(tmp_path: Path) -> None:
    assert "unsupported data format" in (read_data(write(tmp_path, "d.txt", "x")).fatal or "")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00bad")
    assert "not UTF-8" in (read_data(tmp_path / "bin.jsonl").fatal or "")
    assert "empty" in (read_data(write(tmp_path, "e.csv", "")).fatal or "")


def _pf_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, q) of each line prompt flow's own batch input processor makes of ``path``."""
    from promptflow._constants import LINE_NUMBER_KEY
    from promptflow.batch._batch_inputs_processor import BatchInputsProcessor
    from promptflow.contracts.flow import FlowInputDefinition
    from promptflow.contracts.tool import ValueType

    processor = BatchInputsProcessor(path.parent, {"q": FlowInputDefinition(ValueType.STRING)})
    rows = processor.process_batch_inputs({"data": str(path)}, {"q": "${data.q}"})
    return [(int(row[LINE_NUMBER_KEY]), row["q"]) for row in rows]


def test_a_line_number_column_is_flagged_exactly_when_prompt_flow_would_merge_lines(tmp_path: Path) -> None:
    cases = {  # name: (file, flagged as (line, what))
        "positions.jsonl": ('{"q": "a", "line_number": 0}\n{"q": "b", "line_number": 1}\n', None),
        "from-one.jsonl": ('{"q": "a", "line_number": 1}\n{"q": "b", "line_number": 2}\n', None),  # upstream's
        "swapped.csv": ("q,line_number\na,1\nb,0\n", None),
        "none.jsonl": ('{"q": "a"}\n{"q": "b"}\n', None),
        "twice.jsonl": ('{"q": "a", "line_number": 1}\n{"q": "b", "line_number": 1}\n',
                        (2, "line_number 1, which a line before it has too")),
        "twice.csv": ("q,line_number\na,3\nb,3\n", (3, "line_number '3', which a line before it has too")),
        "text.jsonl": ('{"q": "a", "line_number": 0}\n{"q": "b", "line_number": "x"}\n',
                       (2, "line_number 'x', not a whole number")),
        "bool.jsonl": ('{"q": "a", "line_number": false}\n{"q": "b", "line_number": true}\n',
                       (1, "line_number False, not a whole number")),
        "negative.jsonl": ('{"q": "a", "line_number": -1}\n{"q": "b", "line_number": 1}\n',
                           (1, "line_number -1, not a whole number")),
        "gap.jsonl": ('{"q": "a", "line_number": 0}\n{"q": "b"}\n',
                      (2, "no line_number while the lines before it have one")),
        "late.jsonl": ('{"q": "a"}\n{"q": "b", "line_number": 1}\n',
                       (2, "line_number 1 while a line before it has none")),
    }
    for name, (text, flagged) in cases.items():
        path = write(tmp_path, name, text)
        assert read_data(path).line_number_problem == flagged, name
        if flagged is None:  # prompt flow's own: every row is a line of its own
            assert sorted(q for _, q in _pf_lines(path)) == ["a", "b"], name
    assert _pf_lines(tmp_path / "twice.jsonl") == [(1, "b")]  # prompt flow's own: a line is gone, silently
    assert _pf_lines(tmp_path / "twice.csv") == [(3, "b")]
