"""The expression language of GitHub Actions (``${{ }}``, ``if:``) and of Azure Pipelines (``${{ }}`` template
expressions, runtime ``condition:``), as far as the wrappers use it: literals, property and index access, the
operators ``! == != && ||`` (GitHub) and function calls (both). Semantics as documented:

- GitHub (docs.github.com "Evaluate expressions in workflows and actions"): ``&&``/``||`` return an operand, not a
  boolean (``a || 'false'`` is a fallback); ``==`` compares strings ignoring case and coerces other types to
  numbers; falsy are false, 0, '', null; a missing property is null.
- Azure Pipelines ("Expressions"): ``eq``/``ne`` compare strings ignoring case (the right side converted to the
  left's type); ``and``/``or``/``not`` take booleans; a boolean parameter renders as ``True``/``False``.

An unknown name or function is an error of the test (the simulation must know everything the files use).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

TOKEN = re.compile(r"""\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||[!()\[\],.])
                      |(?P<name>[A-Za-z_][A-Za-z0-9_-]*))""", re.X)


class ExpressionError(AssertionError):
    pass


@dataclass
class Token:
    kind: str
    text: str


def tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExpressionError(f"cannot read the expression at {text[pos:]!r}")
        kind = m.lastgroup or ""
        tokens.append(Token(kind, m.group(kind)))
        pos = m.end()
    return tokens


class Evaluator:
    """``names``: the top-level contexts (``inputs``, ``steps``, ``parameters``, ``variables``, ...);
    ``functions``: callables taking evaluated arguments."""

    def __init__(self, names: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]], *,
                 azure: bool = False) -> None:
        self.names, self.functions, self.azure = names, functions, azure

    def evaluate(self, text: str) -> Any:
        self.tokens, self.pos = tokenize(text), 0
        value = self._or()
        if self.pos != len(self.tokens):
            raise ExpressionError(f"unexpected {self.tokens[self.pos].text!r} in {text!r}")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.pos].text if self.pos < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> Token:
        if self.pos >= len(self.tokens):
            raise ExpressionError("the expression ends too early")
        token = self.tokens[self.pos]
        if expected is not None and token.text != expected:
            raise ExpressionError(f"expected {expected!r}, got {token.text!r}")
        self.pos += 1
        return token

    def _or(self) -> Any:
        value = self._and()
        while self._peek() == "||":
            self._take()
            right = self._and()
            value = value if truthy(value) else right
        return value

    def _and(self) -> Any:
        value = self._compare()
        while self._peek() == "&&":
            self._take()
            right = self._compare()
            value = right if truthy(value) else value
        return value

    def _compare(self) -> Any:
        value = self._unary()
        while self._peek() in ("==", "!="):
            op = self._take().text
            right = self._unary()
            same = loose_equal(value, right)
            value = same if op == "==" else not same
        return value

    def _unary(self) -> Any:
        if self._peek() == "!":
            self._take()
            return not truthy(self._unary())
        return self._postfix()

    def _postfix(self) -> Any:
        value = self._primary()
        while self._peek() in (".", "["):
            if self._take().text == ".":
                value = member(value, self._take().text)
            else:
                key = self._or()
                self._take("]")
                value = member(value, str(key))
        return value

    def _primary(self) -> Any:
        token = self._take()
        if token.kind == "str":
            return token.text[1:-1].replace("''", "'")
        if token.kind == "num":
            return float(token.text) if "." in token.text else int(token.text)
        if token.text == "(":
            value = self._or()
            self._take(")")
            return value
        if token.kind != "name":
            raise ExpressionError(f"unexpected {token.text!r}")
        if token.text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[token.text]
        if self._peek() == "(":
            self._take("(")
            args = []
            while self._peek() != ")":
                args.append(self._or())
                if self._peek() == ",":
                    self._take(",")
            self._take(")")
            function = self.functions.get(token.text) or self.functions.get(token.text.lower())
            if function is None:
                raise ExpressionError(f"the simulation does not know the function {token.text}()")
            return function(*args)
        if token.text not in self.names:
            raise ExpressionError(f"the simulation does not know the context {token.text!r}")
        return self.names[token.text]


def member(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        for k, v in value.items():  # property names are case-insensitive on both systems
            if str(k).lower() == key.lower():
                return v
    return None


def truthy(value: Any) -> bool:
    return value not in (False, 0, "", None)


def loose_equal(left: Any, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        return left.lower() == right.lower()
    if left is None or right is None:
        return left is right
    return to_number(left) == to_number(right)


def to_number(value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip() or 0)
    except ValueError:
        return float("nan")


def to_text(value: Any, azure: bool = False) -> str:
    """How a value is written into a string (GitHub: true/false; Azure: True/False)."""
    if isinstance(value, bool):
        return ("True" if value else "False") if azure else ("true" if value else "false")
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def interpolate(text: str, evaluator: Evaluator) -> Any:
    """A whole-value expression keeps its type (a list, a mapping); inside text it is rendered as text."""
    whole = EXPR.fullmatch(text.strip()) if len(EXPR.findall(text)) == 1 else None
    if whole:
        return evaluator.evaluate(whole.group(1))
    return EXPR.sub(lambda m: to_text(evaluator.evaluate(m.group(1)), evaluator.azure), text)


def azure_functions(extra: Mapping[str, Callable[..., Any]] | None = None) -> dict[str, Callable[..., Any]]:
    def eq(a: Any, b: Any) -> bool:
        if isinstance(a, bool):
            return a == (str(b).lower() == "true" if isinstance(b, str) else bool(b))
        return to_text(a, True).lower() == to_text(b, True).lower()

    def join(sep: str, items: Any) -> str:
        return sep.join(to_text(i, True) for i in items) if isinstance(items, list) else to_text(items, True)

    functions: dict[str, Callable[..., Any]] = {
        "eq": eq, "ne": lambda a, b: not eq(a, b), "and": lambda *xs: all(bool(x) for x in xs),
        "or": lambda *xs: any(bool(x) for x in xs), "not": lambda x: not bool(x), "join": join,
        "replace": lambda s, old, new: to_text(s, True).replace(old, new),
        "coalesce": lambda *xs: next((x for x in xs if x not in ("", None)), ""),
    }
    functions.update(extra or {})
    return functions
