"""A flex flow's entry (``module:function`` or ``module:Class``) read with ``ast``: never imported."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from llmops_ci.core.schema import closest

# Python annotation -> prompt flow value type (promptflow.contracts.tool.ValueType)
_VALUE_TYPES = {"str": "string", "int": "int", "float": "double", "bool": "bool", "list": "list", "List": "list",
                "dict": "object", "Dict": "object", "Mapping": "object"}
# What prompt flow 1.18 accepts in an entry's signature (promptflow._core.tool_meta_generator): a parameter is
# one of these bare types (or Optional[...] of one), a connection, or (in __init__) a model configuration; the
# result is str, a TypedDict or a dataclass. Anything else is "a complex python type" and the flow does not load.
_INPUT_TYPES = frozenset({"str", "int", "float", "bool", "list", "dict"})
_MODEL_CONFIGS = frozenset({"AzureOpenAIModelConfiguration", "OpenAIModelConfiguration"})
_GENERICS = frozenset({"list", "List", "dict", "Dict", "tuple", "Tuple", "set", "Set", "frozenset", "FrozenSet",
                       "Sequence", "Mapping", "MutableMapping", "Iterable", "Iterator", "Literal", "Annotated",
                       "Callable", "Type", "type", "Generator"})
_REFUSED = frozenset({"Any", "object", "Mapping", "Sequence", "Iterable", "tuple", "Tuple", "set", "Set", "bytes",
                      "Callable", "None"})
_REFUSED_RETURNS = frozenset({"dict", "Dict", "int", "float", "bool", "list", "List", "Any", "object", "None",
                              "tuple", "Tuple", "set", "bytes"})


@dataclass(frozen=True)
class EntryParam:
    name: str
    annotation: str | None  # the annotation's last name (AzureOpenAIModelConfiguration, str, ...) when simple
    has_default: bool
    line: int

    @property
    def value_type(self) -> str:
        return _VALUE_TYPES.get(self.annotation or "", "object" if self.annotation else "string")


@dataclass
class Signature:
    name: str
    line: int
    params: dict[str, EntryParam] = field(default_factory=dict)
    var_kwargs: bool = False
    refused: list[tuple[int, str]] = field(default_factory=list)  # annotations prompt flow refuses (line, why)


@dataclass
class Entry:
    """What the entry module says statically; ``None`` fields could not be told without running code."""

    file: Path
    kind: str  # "function" | "class" | "opaque" (imported or assigned: exists, signature unknown)
    line: int
    call: Signature | None = None  # the function, or the class's __call__
    init: Signature | None = None  # the class's __init__ (empty when it has none)
    has_call: bool | None = None  # class entries: False when __call__ is surely absent
    own_init: bool | None = None  # class entries: False when only object.__init__ is left
    aggregate: bool = False
    outputs: set[str] | None = None  # None: not visible statically
    future_annotations: int | None = None  # line of `from __future__ import annotations`, when the entry is typed


class EntryError(Exception):
    def __init__(self, rule: str, message: str, file: Path | None = None, line: int | None = None,
                 column: int | None = None) -> None:
        super().__init__(message)
        self.rule, self.message, self.file, self.line, self.column = rule, message, file, line, column


def _last_name(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.rsplit(".", 1)[-1].split("[", 1)[0]
    if isinstance(node, ast.Subscript):
        base = _last_name(node.value)
        if base in ("Optional", "Annotated"):
            inner = node.slice.elts[0] if isinstance(node.slice, ast.Tuple) else node.slice
            return _last_name(inner)
        return base
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # X | None
        left, right = _last_name(node.left), _last_name(node.right)
        return left if left != "None" else right
    return None


def _refused(node: ast.expr | None, names: dict[str, ast.stmt], *, init: bool, result: bool) -> str | None:
    """Why prompt flow refuses this annotation, or None when it takes it (or it cannot be told statically)."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return f"the quoted annotation '{node.value}' reaches prompt flow as a string; write it unquoted"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        shown = ast.unparse(node)
        return f"'{shown}' (a types.UnionType) is not read by prompt flow; write Optional[...] instead"
    if isinstance(node, ast.Subscript):
        base = _last_name(node.value)
        inner = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        args = [a for a in inner if not (isinstance(a, ast.Constant) and a.value is None)]
        if base == "Optional" or (base == "Union" and len(args) == 1):
            return _refused(args[0], names, init=init, result=result)
        if base in _GENERICS:
            bare = "dict" if base in ("dict", "Dict", "Mapping", "MutableMapping") else "list"
            return f"'{ast.unparse(node)}' is a complex python type to prompt flow; write the bare '{bare}'"
        return None
    name = _last_name(node) or ("None" if isinstance(node, ast.Constant) and node.value is None else None)
    target = names.get(name or "")
    if result:
        if name == "str" or (isinstance(target, ast.ClassDef) and _class_fields(target) is not None):
            return None
        if name in _REFUSED_RETURNS or isinstance(target, ast.ClassDef):
            return f"'-> {ast.unparse(node)}': an entry must return str, a TypedDict or a dataclass"
        return None
    if name in _INPUT_TYPES or (name or "").endswith("Connection"):
        return None
    if name in _MODEL_CONFIGS:
        return None if init else f"'{name}' is taken by __init__ only; pass it in init, not per line"
    if isinstance(target, ast.ClassDef):
        if {_last_name(b) for b in target.bases} & {"Enum", "StrEnum", "IntEnum"}:
            return None
        return f"'{name}' is a complex python type to prompt flow; take a dict"
    if name in _REFUSED:
        return f"'{name}' is a complex python type to prompt flow; use str, int, float, bool, list or dict"
    return None


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef, skip_self: bool, names: dict[str, ast.stmt] | None = None,
               *, init: bool = False) -> Signature:
    sig = Signature(fn.name, fn.lineno, var_kwargs=fn.args.kwarg is not None)
    positional = [*fn.args.posonlyargs, *fn.args.args]
    first_default = len(positional) - len(fn.args.defaults)
    for i, arg in enumerate(positional):
        if skip_self and i == 0:
            continue
        sig.params[arg.arg] = EntryParam(arg.arg, _last_name(arg.annotation), i >= first_default, arg.lineno)
    for arg, default in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True):
        sig.params[arg.arg] = EntryParam(arg.arg, _last_name(arg.annotation), default is not None, arg.lineno)
    if names is not None:
        args = [*positional[1 if skip_self else 0:], *fn.args.kwonlyargs]
        for arg in args:
            why = _refused(arg.annotation, names, init=init, result=False)
            if why:
                sig.refused.append((arg.lineno, f"parameter '{arg.arg}' of {fn.name}(): {why}"))
        if not init:
            why = _refused(fn.returns, names, init=False, result=True)
            if why and fn.returns is not None:
                sig.refused.append((fn.returns.lineno, f"{fn.name}() {why}"))
    return sig


def _future_annotations(tree: ast.Module) -> int | None:
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__" and any(
                a.name == "annotations" for a in stmt.names):
            return stmt.lineno
    return None


def _annotated(*fns: ast.FunctionDef | ast.AsyncFunctionDef | None) -> bool:
    return any(fn is not None and (fn.returns is not None or any(
        a.annotation is not None for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs])) for fn in fns)


def module_file(code: Path, module: str) -> Path | None:
    """``a.b`` -> code/a/b.py or code/a/b/__init__.py, as Python would find it with ``code`` on sys.path."""
    base = code.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _toplevel(tree: ast.Module) -> dict[str, ast.stmt]:
    """Names bound at module level (the last binding wins, as at import time)."""
    out: dict[str, ast.stmt] = {}

    def bind(stmt: ast.stmt) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[stmt.name] = stmt
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                for node in ast.walk(target):
                    if isinstance(node, ast.Name):
                        out[node.id] = stmt
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            out[stmt.target.id] = stmt
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                if alias.name != "*":
                    out[(alias.asname or alias.name).split(".")[0]] = stmt
        elif isinstance(stmt, (ast.If, ast.Try)):
            for child in [*stmt.body, *getattr(stmt, "orelse", []), *getattr(stmt, "finalbody", []),
                          *[s for h in getattr(stmt, "handlers", []) for s in h.body]]:
                bind(child)

    for stmt in tree.body:
        bind(stmt)
    return out


def _star_import(tree: ast.Module) -> bool:
    return any(isinstance(s, ast.ImportFrom) and any(a.name == "*" for a in s.names) for s in tree.body)


def _class_fields(cls: ast.ClassDef) -> set[str] | None:
    """Field names of a TypedDict or @dataclass class; None when it is neither."""
    bases = {_last_name(b) for b in cls.bases}
    decorators = {_last_name(d.func if isinstance(d, ast.Call) else d) for d in cls.decorator_list}
    if "TypedDict" not in bases and "dataclass" not in decorators:
        return None
    return {s.target.id for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}


def _outputs(fn: ast.FunctionDef | ast.AsyncFunctionDef, names: dict[str, ast.stmt]) -> set[str] | None:
    ann = fn.returns
    name = _last_name(ann)
    if name is None:
        return None
    if name == "str":
        return {"output"}
    target = names.get(name)
    if isinstance(target, ast.ClassDef):
        return _class_fields(target)
    return None


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {s.name: s for s in cls.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}


def read_entry(code: Path, module: str, attr: str) -> Entry:
    """The entry ``module:attr`` below ``code``; EntryError (rule, message, place) when it cannot exist."""
    file = module_file(code, module)
    if file is None:
        raise EntryError("flex-entry-missing", f"entry module '{module}' not found: no {module.replace('.', '/')}.py "
                         f"(or package) in {code}")
    try:
        source = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EntryError("flex-entry-missing", f"cannot read {file.name}: {exc}", file) from None
    try:
        tree = ast.parse(source, filename=str(file))
    except SyntaxError as exc:
        raise EntryError("flex-entry-syntax", f"Python syntax error: {exc.msg}", file, exc.lineno,
                         exc.offset) from None
    names = _toplevel(tree)
    node = names.get(attr)
    if node is None:
        if _star_import(tree):
            return Entry(file, "opaque", 1)
        callables = [n for n, s in names.items() if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                   ast.ClassDef))]
        best = closest(attr, callables)
        raise EntryError("flex-entry-missing", f"{file.name} defines no '{attr}'"
                         + (f"; did you mean '{best}'?" if best else
                            f"; it defines: {', '.join(sorted(callables)) or 'no functions or classes'}"), file, 1, 1)
    future = _future_annotations(tree)
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        entry = Entry(file, "function", node.lineno, call=_signature(node, False, None if future else names),
                      outputs=_outputs(node, names))
        entry.future_annotations = future if future and _annotated(node) else None
        return entry
    if isinstance(node, ast.ClassDef):
        return _class_entry(file, node, names, future)
    return Entry(file, "opaque", node.lineno)


def _class_entry(file: Path, cls: ast.ClassDef, names: dict[str, ast.stmt], future: int | None) -> Entry:
    entry = Entry(file, "class", cls.lineno)
    chain: list[ast.ClassDef] = [cls]
    open_base = False  # a base class we cannot see may supply __init__/__call__
    seen = {cls.name}
    i = 0
    while i < len(chain):
        for base in chain[i].bases:
            bname = _last_name(base)
            target = names.get(bname or "")
            if isinstance(target, ast.ClassDef) and target.name not in seen:
                seen.add(target.name)
                chain.append(target)
            elif bname not in (None, "object", "Generic", "ABC"):
                open_base = True
        i += 1
    call = init = None
    aggregate = False
    for klass in chain:
        methods = _methods(klass)
        call = call or methods.get("__call__")
        init = init or methods.get("__init__")
        aggregate = aggregate or "__aggregate__" in methods
    entry.aggregate = aggregate
    checked = None if future else names
    if call is not None:
        entry.call = _signature(call, True, checked)
        entry.outputs = _outputs(call, names)
        entry.has_call = True
    else:
        entry.has_call = None if open_base else False
    entry.future_annotations = future if future and _annotated(call, init) else None
    if init is not None:
        entry.init = _signature(init, True, checked, init=True)
        entry.own_init = True
    elif any(_class_fields(k) is not None and "dataclass" in {_last_name(d.func if isinstance(d, ast.Call) else d)
                                                              for d in k.decorator_list} for k in chain):
        entry.init = _dataclass_init(chain)
        entry.own_init = True
    elif not open_base:
        entry.init = Signature("__init__", cls.lineno)
        entry.own_init = False
    return entry


def _dataclass_init(chain: list[ast.ClassDef]) -> Signature:
    sig = Signature("__init__", chain[0].lineno)
    for klass in reversed(chain):
        for stmt in klass.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                name = stmt.target.id
                sig.params[name] = EntryParam(name, _last_name(stmt.annotation), stmt.value is not None, stmt.lineno)
    return sig
