"""Where a group of settings was written (a file and the keys down to it), so checks can point at the exact line."""

from __future__ import annotations

from dataclasses import dataclass

from llmops_ci.core.errors import Problem
from llmops_ci.core.yamldoc import Key, YamlDoc


@dataclass(frozen=True)
class Origin:
    """Where a group of settings was written, so later checks can point at the exact line."""

    doc: YamlDoc
    prefix: Key = ()
    renames: tuple[tuple[str, str], ...] = ()

    def problem(self, sub: Key, message: str, rule: str, *, at_key: bool = False) -> Problem:
        names = dict(self.renames)
        if sub and isinstance(sub[0], str):
            sub = (names.get(sub[0], sub[0]), *sub[1:])
        return self.doc.problem((*self.prefix, *sub), message, rule, at_key=at_key)
