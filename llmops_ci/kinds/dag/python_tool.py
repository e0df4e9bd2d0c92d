"""Static checks of a Python tool file: it parses, has one @tool function, and matches its node."""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

CONNECTION_CLASSES = frozenset({
    "AzureOpenAIConnection", "OpenAIConnection", "CustomConnection", "SerpConnection", "CognitiveSearchConnection",
    "AzureContentSafetyConnection", "FormRecognizerConnection", "ServerlessConnection", "WeaviateConnection",
    "QdrantConnection", "PineconeConnection",
})


@dataclass
class Param:
    name: str
    has_default: bool
    line: int
    connection: bool = False


@dataclass
class ToolSignature:
    name: str
    line: int
    params: dict[str, Param] = field(default_factory=dict)
    var_kwargs: bool = False
    returns: str | None = None  # the return annotation's name (int, str, dict, ...), when there is one


class ToolFileError(Exception):
    def __init__(self, rule: str, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.rule, self.message, self.line, self.column = rule, message, line, column


def _is_tool_decorator(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Name):
        return target.id == "tool"
    if isinstance(target, ast.Attribute):
        return target.attr == "tool"
    return False


def _annotation_name(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.rsplit(".", 1)[-1]
    if isinstance(node, ast.BinOp):  # Conn | None
        return _annotation_name(node.left) or _annotation_name(node.right)
    if isinstance(node, ast.Subscript):  # Optional[Conn], Union[...]
        inner = node.slice
        elts = inner.elts if isinstance(inner, ast.Tuple) else [inner]
        for elt in elts:
            name = _annotation_name(elt)
            if name in CONNECTION_CLASSES:
                return name
    return None


def _return_name(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Subscript):  # List[int], dict[str, float]: the container decides
        return _return_name(node.value)
    if isinstance(node, ast.Constant) and node.value is None:
        return "None"
    return _annotation_name(node) if isinstance(node, (ast.Name, ast.Attribute, ast.Constant)) else None


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef, skip_self: bool) -> ToolSignature:
    sig = ToolSignature(fn.name, fn.lineno, var_kwargs=fn.args.kwarg is not None,
                        returns=_return_name(fn.returns))
    positional = [*fn.args.posonlyargs, *fn.args.args]
    named_only = fn.args.posonlyargs[1:] if skip_self else fn.args.posonlyargs
    if named_only:
        arg = named_only[0]
        raise ToolFileError("tool-function", f"parameter '{arg.arg}' of {fn.name}() is positional-only (before "
                            "'/'), but prompt flow passes every input by name; remove the '/'", arg.lineno,
                            arg.col_offset + 1)
    if skip_self and positional:
        positional = positional[1:]
    first_default = len(positional) - len(fn.args.defaults)
    for i, arg in enumerate(positional):
        sig.params[arg.arg] = Param(arg.arg, i >= first_default, arg.lineno,
                                    _annotation_name(arg.annotation) in CONNECTION_CLASSES)
    for arg, default in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True):
        sig.params[arg.arg] = Param(arg.arg, default is not None, arg.lineno,
                                    _annotation_name(arg.annotation) in CONNECTION_CLASSES)
    return sig


def read_tool(path: Path) -> ToolSignature:
    """The one @tool function in ``path``; ToolFileError says what is wrong otherwise."""
    try:
        if not path.is_file():
            raise OSError("not a regular file")
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolFileError("tool-file-missing", f"cannot read {path.name}: {exc}") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise ToolFileError("tool-syntax", f"Python syntax error: {exc.msg}", exc.lineno or 1, exc.offset) from None
    except (RecursionError, MemoryError):  # Python's own parser gives up on deep nesting this way
        raise ToolFileError("tool-syntax", "nested too deeply for Python's parser (the flow could not import it "
                            "either); split the expression", 1, 1) from None
    except ValueError as exc:  # a NUL byte in the source
        raise ToolFileError("tool-syntax", f"not Python source: {exc}", 1, 1) from None
    found: list[ToolSignature] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if any(_is_tool_decorator(d) for d in node.decorator_list):
                found.append(_signature(node, skip_self=False))
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                        _is_tool_decorator(d) for d in item.decorator_list):
                    found.append(_signature(item, skip_self=True))
    if not found:
        raise ToolFileError("tool-function", f"{path.name} has no function decorated with @tool; decorate the "
                            "entry function with 'from promptflow.core import tool' / '@tool'", 1, 1)
    if len(found) > 1:
        names = ", ".join(f"{s.name} (line {s.line})" for s in found)
        raise ToolFileError("tool-function", f"{path.name} has {len(found)} @tool functions ({names}); prompt "
                            "flow needs exactly one per file: move the others to their own files", found[1].line, 1)
    return found[0]

def module_installed(tool: str) -> bool:
    """Whether the module behind a package tool id exists, found without importing anything."""
    parts = tool.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    locations = list(spec.submodule_search_locations or [])
    if not locations:
        return len(parts) <= 2  # a single-file module: tool ids are module.function
    for part in parts[1:]:
        for loc in locations:
            base = Path(loc) / part
            if base.with_suffix(".py").is_file():
                return True
            if base.is_dir():
                locations = [str(base)]
                break
        else:
            return False
    return True
