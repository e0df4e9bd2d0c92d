"""YAML loaded as plain data plus the line and column of every key and value.

Lint and config errors must name a line; PyYAML's plain loaders drop positions, so we
compose the node graph (with libyaml when present) and build the data ourselves.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from llmops_ci.core.errors import ConfigError, Problem

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Key = tuple[Any, ...]

# Bounds for hostile documents: a config, run.yml or flow.dag.yaml is a few kB with a few hundred values.
MAX_BYTES = 10_000_000
MAX_VALUES = 200_000  # values after expanding aliases and merge keys (billion laughs)
MAX_DEPTH = 100


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


def _at(doc: YamlDoc, node: Node, message: str, rule: str = "yaml-syntax") -> ConfigError:
    mark = node.start_mark
    return ConfigError([Problem(doc.display, mark.line + 1, mark.column + 1, message, rule)])


def _check_size(doc: YamlDoc, root: Node) -> None:
    """Refuse a node graph that is recursive, too deep or expands to too many values, before building it.

    The composer shares one node per anchor, so sizes are counted once per node (memoised) and the
    check is linear in the document, whatever its aliases expand to.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()
    # an explicit stack: the point is to survive inputs that would exhaust Python's recursion limit
    stack: list[tuple[Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            children = _children(node)
            total = 1 + sum(sizes[id(c)] for c in children)
            if total > MAX_VALUES:
                raise _at(doc, node, f"this value expands to more than {MAX_VALUES:,} values through aliases "
                          "(*name) or merge keys (<<); write the values out or remove the repeated aliases")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in active:
            raise _at(doc, node, "recursive alias: this anchor (&name) is used inside its own value; "
                      "an alias (*name) may only refer to a value defined before it, not to one that contains it")
        if depth > MAX_DEPTH:
            raise _at(doc, node, f"values nested more than {MAX_DEPTH} levels deep; flatten this structure")
        active.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) in active:
                raise _at(doc, child, "recursive alias: this anchor (&name) is used inside its own value; "
                          "an alias (*name) may only refer to a value defined before it, not to one that "
                          "contains it")
            if id(child) not in sizes:
                stack.append((child, depth + 1, False))


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


class _Builder:
    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.constructor = SafeConstructor()

    def scalar(self, node: Node) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except (ValueError, OverflowError) as exc:  # a 5,000-digit int, a 13th month, ...
            why = "a number with more than 4,300 digits" if "limit" in str(exc) else str(exc)
            raise _at(self.doc, node, f"cannot read the value '{str(node.value)[:40]}': {why}; "
                      "quote it to keep it as text, or write a smaller value") from None

    def build(self, node: Node, path: Key) -> Any:
        self.doc.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            self.constructor.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    raise _at(self.doc, key_node, "a key must be plain text, not a list or mapping")
                key = self.scalar(key_node)
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
    if len(text) > MAX_BYTES:
        raise ConfigError([Problem(doc.display, None, None, f"too large for a YAML file ({len(text):,} characters, "
                                   f"limit {MAX_BYTES:,})", "yaml-syntax")])
    try:
        node = yaml.compose(text, Loader=_Loader)
    except RecursionError:
        raise ConfigError([Problem(doc.display, None, None, f"values nested too deeply (more than {MAX_DEPTH} "
                                   "levels are refused); flatten this structure", "yaml-syntax")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        what = exc.problem or exc.context or "invalid YAML"
        raise ConfigError([Problem(doc.display, line, col, f"YAML syntax error: {what}", "yaml-syntax")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(doc.display, None, None, f"YAML error: {exc}", "yaml-syntax")]) from None
    if node is not None:
        _check_size(doc, node)
        try:
            doc.data = _Builder(doc).build(node, ())
        except yaml.constructor.ConstructorError as exc:
            mark = exc.problem_mark
            raise ConfigError([Problem(doc.display, mark.line + 1 if mark else None,
                                       mark.column + 1 if mark else None,
                                       f"YAML error: {exc.problem}", "yaml-syntax")]) from None
    return doc


def load_yaml(path: Path) -> YamlDoc:
    """Read and parse a YAML file: a regular file of at most MAX_BYTES (never a FIFO or a device)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError([Problem(display_path(path), None, None, "not a regular file (a folder, FIFO or "
                                       "device); point at the YAML file itself", "yaml-syntax")])
        if info.st_size > MAX_BYTES:
            raise ConfigError([Problem(display_path(path), None, None, f"{info.st_size:,} bytes is too large for "
                                       f"a YAML file (limit {MAX_BYTES:,})", "yaml-syntax")])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(display_path(path), None, None, "file not found", "path-missing")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(display_path(path), None, None, f"cannot read: {exc}", "path-missing")]) from None
    return parse_yaml(text, path)
