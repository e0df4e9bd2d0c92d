"""YAML loaded as plain data plus the line and column of every key and value.

Lint and config errors must name a line; PyYAML's plain loaders drop positions, so we
compose the node graph (with libyaml when present) and build the data ourselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from llmops_ci.errors import ConfigError, Problem

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Key = tuple[Any, ...]


def display_path(path: Path | str) -> str:
    """A path as users should see it: relative to the working directory when below it."""
    p = Path(path)
    try:
        rel = os.path.relpath(p)
    except ValueError:
        return str(p)
    return rel if not rel.startswith("..") else str(p.absolute())


@dataclass
class YamlDoc:
    path: Path
    data: Any
    values: dict[Key, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Key, tuple[int, int]] = field(default_factory=dict)
    duplicates: list[Problem] = field(default_factory=list)

    @property
    def display(self) -> str:
        return display_path(self.path)

    def pos(self, *path: Any) -> tuple[int | None, int | None]:
        """Line and column (1-based) of the value at ``path``, or of its nearest ancestor."""
        return self._lookup(self.values, path)

    def key_pos(self, *path: Any) -> tuple[int | None, int | None]:
        """Line and column of the key that holds ``path`` (falls back to the value)."""
        if path in self.keys:
            return self.keys[path]
        return self._lookup(self.values, path)

    def _lookup(self, table: dict[Key, tuple[int, int]], path: Key) -> tuple[int | None, int | None]:
        p = tuple(path)
        while p:
            if p in table:
                return table[p]
            p = p[:-1]
        return table.get((), (None, None))

    def problem(self, path: Key, message: str, rule: str, *, at_key: bool = False) -> Problem:
        line, col = self.key_pos(*path) if at_key else self.pos(*path)
        return Problem(self.display, line, col, message, rule)


class _Builder:
    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.constructor = SafeConstructor()

    def build(self, node: Node, path: Key) -> Any:
        self.doc.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, ScalarNode):
            return self.constructor.construct_object(node, deep=True)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            self.constructor.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    key = str(key)
                child = (*path, key)
                if key in out:
                    line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                    self.doc.duplicates.append(
                        Problem(self.doc.display, line, col,
                                f"duplicate key '{key}': YAML keeps only the last one; remove one of them",
                                "yaml-duplicate-key"))
                self.doc.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = self.build(value_node, child)
            return out
        return None


def parse_yaml(text: str, path: Path) -> YamlDoc:
    """Parse one YAML document; raise ConfigError with line and column on a syntax error."""
    doc = YamlDoc(path=path, data=None)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        what = exc.problem or exc.context or "invalid YAML"
        raise ConfigError([Problem(doc.display, line, col, f"YAML syntax error: {what}", "yaml-syntax")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(doc.display, None, None, f"YAML error: {exc}", "yaml-syntax")]) from None
    if node is not None:
        try:
            doc.data = _Builder(doc).build(node, ())
        except yaml.constructor.ConstructorError as exc:
            mark = exc.problem_mark
            raise ConfigError([Problem(doc.display, mark.line + 1 if mark else None,
                                       mark.column + 1 if mark else None,
                                       f"YAML error: {exc.problem}", "yaml-syntax")]) from None
    return doc


def load_yaml(path: Path) -> YamlDoc:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(display_path(path), None, None, "file not found", "path-missing")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(display_path(path), None, None, f"cannot read: {exc}", "path-missing")]) from None
    return parse_yaml(text, path)
