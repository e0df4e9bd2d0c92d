from __future__ import annotations

from pathlib import Path

import pytest

from llmops_ci.core.errors import ConfigError
from llmops_ci.core.yamldoc import parse_yaml


def test_positions_of_keys_and_values() -> None:
    doc = parse_yaml("a:\n  b: [1, {c: x}]\n  d: |\n    text\n", Path("f.yaml"))
    assert doc.data == {"a": {"b": [1, {"c": "x"}], "d": "text\n"}}
    assert doc.key_pos("a", "b") == (2, 3)
    assert doc.pos("a", "b") == (2, 6)
    assert doc.pos("a", "b", 1, "c") == (2, 14)
    assert doc.pos("a", "missing", "deeper") == doc.pos("a")


def test_duplicate_keys_are_reported() -> None:
    doc = parse_yaml("a: 1\nb: 2\na: 3\n", Path("f.yaml"))
    assert doc.data == {"a": 3, "b": 2}
    assert [(p.line, p.rule) for p in doc.duplicates] == [(3, "yaml-duplicate-key")]


def test_merge_keys_and_anchors() -> None:
    doc = parse_yaml("base: &b {x: 1}\nchild:\n  <<: *b\n  y: 2\n", Path("f.yaml"))
    assert doc.data["child"] == {"x": 1, "y": 2}


def test_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ConfigError) as err:
        parse_yaml("a: 1\nb: [1, 2\nc: 3\n", Path("f.yaml"))
    (p,) = err.value.problems
    assert (p.rule, p.line) == ("yaml-syntax", 3)
    assert p.column is not None


def test_bad_tag() -> None:
    with pytest.raises(ConfigError) as err:
        parse_yaml("a: !!python/object:os.system x\n", Path("f.yaml"))
    assert err.value.problems[0].rule == "yaml-syntax"
