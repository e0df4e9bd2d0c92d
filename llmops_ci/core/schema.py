"""A small declarative shape check for YAML documents, with located, fixable messages."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from llmops_ci.core.errors import Problem
from llmops_ci.core.yamldoc import Key, YamlDoc

_TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
               dict: "a mapping", list: "a list", type(None): "empty"}


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def as_dict(value: Any) -> dict[Any, Any]:
    """``value`` when it is a mapping, else an empty one (shape errors are reported separately)."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def describe(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def closest(word: str, choices: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    choices = sorted(choices)
    best = closest(word, choices)
    if best:
        return f"did you mean '{best}'?"
    return "valid keys: " + ", ".join(choices) if choices else "no keys are allowed here"


class _Refused:
    """What a check hands back for a value it refused: the caller leaves it out."""

    def __repr__(self) -> str:
        return "REFUSED"


REFUSED: Any = _Refused()


class Spec:
    def check(self, doc: YamlDoc, value: Any, path: Key, out: list[Problem]) -> Any:
        """Report the problems of ``value`` into ``out`` and hand back the value as declared: a wrong-typed value
        is REFUSED, a mapping keeps only its known keys with valid values, a list only its valid items. A value
        of the right type that fails a pattern, a choice or a finiteness rule is reported and handed back as written
        (it has the declared type, and its problem already stops every step but lint)."""
        raise NotImplementedError


@dataclass
class Scalar(Spec):
    types: tuple[type, ...]
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None
    hint: str = ""
    finite: bool = False  # numbers: refuse .nan and .inf (NaN passes or fails every comparison silently)

    def check(self, doc: YamlDoc, value: Any, path: Key, out: list[Problem]) -> Any:
        if not _is(value, self.types):
            want = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in self.types)
            out.append(doc.problem(path, f"'{_name(path)}' must be {want}, not {describe(value)}{self.hint}",
                                   "wrong-type"))
            return REFUSED
        if self.finite and isinstance(value, float) and not math.isfinite(value):
            out.append(doc.problem(path, f"'{_name(path)}' is {value}; it must be a finite number like 0.8",
                                   "wrong-type"))
            return value
        if self.choices is not None and value not in self.choices:
            best = closest(str(value), [str(c) for c in self.choices])
            tip = f"; did you mean '{best}'?" if best else ""
            allowed = ", ".join(str(c) for c in self.choices)
            out.append(doc.problem(path, f"'{_name(path)}' is '{value}'; it must be one of: {allowed}{tip}",
                                   "wrong-type"))
        elif self.pattern is not None and isinstance(value, str) and not re.fullmatch(self.pattern, value):
            out.append(doc.problem(path, f"'{value}' is not valid for '{_name(path)}'{self.hint}", "wrong-type"))
        return value


def path_problem(value: str) -> str | None:
    """Why ``value`` cannot be a file path on any system we run on, or None."""
    if not value.strip():
        return "is empty; give a path relative to the file it is written in"
    if "\x00" in value:
        return "holds a NUL character"
    if len(value.encode("utf-8", "surrogatepass")) > 4096 or any(
            len(part.encode("utf-8", "surrogatepass")) > 255 for part in value.split("/")):
        return "is too long for a path (a name is at most 255 bytes, a path 4096)"
    return None


@dataclass
class PathValue(Spec):
    def check(self, doc: YamlDoc, value: Any, path: Key, out: list[Problem]) -> Any:
        if not isinstance(value, str):
            out.append(doc.problem(path, f"'{_name(path)}' must be a string, not {describe(value)}", "wrong-type"))
            return REFUSED
        problem = path_problem(value)
        if problem:
            out.append(doc.problem(path, f"'{_name(path)}' {problem}", "wrong-type"))
            return REFUSED
        return value


@dataclass
class AnyValue(Spec):
    def check(self, doc: YamlDoc, value: Any, path: Key, out: list[Problem]) -> Any:
        return value


@dataclass
class ListOf(Spec):
    item: Spec

    def check(self, doc: YamlDoc, value: Any, path: Key, out: list[Problem]) -> Any:
        if not isinstance(value, list):
            out.append(doc.problem(path, f"'{_name(path)}' must be a list, not {describe(value)}", "wrong-type"))
            return REFUSED
        items = [self.item.check(doc, item, (*path, i), out) for i, item in enumerate(value)]
        return [item for item in items if item is not REFUSED]


@dataclass
class MapOf(Spec):
    value: Spec
    key_pattern: str | None = None
    key_hint: str = ""

    def check(self, doc: YamlDoc, value: Any, path: Key, out: list[Problem]) -> Any:
        if not isinstance(value, dict):
            out.append(doc.problem(path, f"'{_name(path)}' must be a mapping, not {describe(value)}", "wrong-type"))
            return REFUSED
        checked = {}
        for key, item in value.items():
            if self.key_pattern and not re.fullmatch(self.key_pattern, str(key)):
                out.append(doc.problem((*path, key), f"'{key}' is not a valid name{self.key_hint}", "wrong-type",
                                       at_key=True))
            checked[key] = self.value.check(doc, item, (*path, key), out)
        return {key: item for key, item in checked.items() if item is not REFUSED}


@dataclass
class Struct(Spec):
    fields: dict[str, Spec]
    required: tuple[str, ...] = ()
    what: str = "here"
    exclusive: tuple[tuple[str, ...], ...] = field(default_factory=tuple)

    def check(self, doc: YamlDoc, value: Any, path: Key, out: list[Problem]) -> Any:
        if not isinstance(value, dict):
            out.append(doc.problem(path, f"'{_name(path)}' must be a mapping, not {describe(value)}", "wrong-type"))
            return REFUSED
        checked = {}
        for key, item in value.items():
            spec = self.fields.get(key)
            if spec is None:
                out.append(doc.problem((*path, key), f"unknown key '{key}' {self.what}; "
                                       f"{did_you_mean(str(key), self.fields)}", "unknown-key", at_key=True))
                continue
            checked[key] = spec.check(doc, item, (*path, key), out)
        for key in self.required:
            if key not in value:
                out.append(doc.problem(path, f"missing required key '{key}' {self.what}", "missing-key",
                                       at_key=True))
        for group in self.exclusive:
            present = [k for k in group if k in value]
            if len(present) > 1:
                out.append(doc.problem((*path, present[1]), f"use either '{present[0]}' or '{present[1]}' "
                                       f"{self.what}, not both", "wrong-type", at_key=True))
        return {key: item for key, item in checked.items() if item is not REFUSED}


@dataclass
class OneOf(Spec):
    options: tuple[Spec, ...]
    summary: str

    def check(self, doc: YamlDoc, value: Any, path: Key, out: list[Problem]) -> Any:
        for option in self.options:
            trial: list[Problem] = []
            checked = option.check(doc, value, path, trial)
            if not trial:
                return checked
        out.append(doc.problem(path, f"'{_name(path)}' must be {self.summary}", "wrong-type"))
        return REFUSED


def _name(path: Key) -> str:
    for part in reversed(path):
        if isinstance(part, str):
            return part
    return "document"


STR = Scalar((str,))
NUM = Scalar((int, float))
FINITE = Scalar((int, float), finite=True)
INT = Scalar((int,))
BOOL = Scalar((bool,))
SCALAR = Scalar((str, int, float, bool))
STR_MAP = MapOf(Scalar((str, int, float, bool, type(None))))
