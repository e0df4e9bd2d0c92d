"""The shape check hands back what it validated: wrong-typed and unknown values left out, the rest as written."""

from __future__ import annotations

from pathlib import Path

from llmops_ci.core.errors import Problem
from llmops_ci.core.schema import (
    BOOL,
    INT,
    REFUSED,
    STR,
    STR_MAP,
    ListOf,
    MapOf,
    OneOf,
    PathValue,
    Scalar,
    Struct,
)
from llmops_ci.core.yamldoc import parse_yaml

SPEC = Struct({"name": Scalar((str,), pattern=r"[a-z]+"), "count": INT, "flag": BOOL, "steps": ListOf(INT),
               "env": OneOf((STR_MAP, STR), "a mapping or a path"), "path": PathValue(),
               "nested": Struct({"a": STR}), "map": MapOf(INT)})


def checked(text: str) -> tuple[object, list[Problem]]:
    doc = parse_yaml(text, Path("f.yaml"))
    problems: list[Problem] = []
    return SPEC.check(doc, doc.data, (), problems), problems


def test_a_valid_document_comes_back_whole() -> None:
    text = "name: ab\ncount: 3\nflag: true\nsteps: [1, 2]\nenv: {A: x}\npath: p/q\nnested: {a: b}\nmap: {x: 1}\n"
    value, problems = checked(text)
    assert problems == []
    assert value == parse_yaml(text, Path("f.yaml")).data


def test_wrong_typed_and_unknown_values_are_left_out() -> None:
    value, problems = checked("count: true\nflag: 1\nsteps: [1, x, true, 3]\nextra: 1\nnested: {a: 5, b: c}\n"
                              "map: {x: 1, y: two}\npath: ''\n")
    assert value == {"steps": [1, 3], "nested": {}, "map": {"x": 1}}
    assert [p.rule for p in problems] == ["wrong-type"] * 4 + ["unknown-key", "wrong-type", "unknown-key",
                                                                "wrong-type", "wrong-type"]


def test_a_value_of_the_right_type_failing_a_pattern_is_reported_and_kept() -> None:
    value, problems = checked("name: AB\n")
    assert value == {"name": "AB"} and [p.rule for p in problems] == ["wrong-type"]


def test_one_of_hands_back_the_option_that_fits() -> None:
    assert checked("env: .env\n") == ({"env": ".env"}, [])
    assert checked("env: {A: [1]}\n")[0] == {}


def test_a_refused_document_is_refused_whole() -> None:
    value, problems = checked("[1, 2]\n")
    assert value is REFUSED and len(problems) == 1
