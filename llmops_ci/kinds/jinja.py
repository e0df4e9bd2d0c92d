"""Jinja2 prompt templates: syntax, and which variables they really read."""

from __future__ import annotations

from dataclasses import dataclass, field

import jinja2
from jinja2 import meta, nodes

# prompt flow renders LLM and prompt templates with these options.
_ENV = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True)
_GLOBALS = frozenset(_ENV.globals)


@dataclass
class TemplateVars:
    used: dict[str, int] = field(default_factory=dict)  # variable -> first line it is read on


class TemplateSyntax(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message, self.line = message, line


def template_vars(source: str) -> TemplateVars:
    """Variables the template needs from outside (loop and ``set`` names excluded), with a line each."""
    try:
        tree = _ENV.parse(source)
        undeclared = meta.find_undeclared_variables(tree) - _GLOBALS
        names = list(tree.find_all(nodes.Name))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateSyntax(exc.message or "syntax error", exc.lineno) from None
    except (RecursionError, MemoryError):
        raise TemplateSyntax("nested too deeply for Jinja2 to parse (prompt flow could not render it either); "
                             "flatten the expression or the blocks", None) from None
    out = TemplateVars()
    for name_node in names:
        if name_node.ctx == "load" and name_node.name in undeclared and name_node.name not in out.used:
            out.used[name_node.name] = name_node.lineno
    for name in undeclared:
        out.used.setdefault(name, 1)
    return out
