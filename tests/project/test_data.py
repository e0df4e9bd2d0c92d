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
