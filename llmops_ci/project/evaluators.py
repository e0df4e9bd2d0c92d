"""Evaluations given as code: azure-ai-evaluation evaluators (``evaluator: module:Class``) and MLflow 3 scorers
(``scorer: module:attr``), found statically so lint never imports them.

``locate`` finds the module's source without importing it (``importlib.util.find_spec`` of the top-level
package only, then the package folders by hand: finding ``a.b.c`` with ``find_spec`` would import ``a.b``),
follows re-exports (``from ._x import Y``) and reads the class's ``__init__`` and ``__call__`` parameters
(the ``@overload`` signatures when the implementation takes ``*args, **kwargs``, as azure-ai-evaluation's do)
or a function's parameters. The run itself is in ``backends/evaluator_local.py`` and a child process.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from llmops_ci.config import Evaluation
from llmops_ci.kinds.base import FlowInfo, FlowInput

ENGINE = "evaluator"
KINDS = ("evaluator", "scorer")  # FlowInfo.kind of an evaluator:/scorer: evaluation (not flow kinds: no path has them)
MAX_HOPS = 8
# what an MLflow 3 scorer is called with (mlflow.genai.scorers.Scorer.__call__)
SCORER_PARAMS = ("inputs", "outputs", "expectations", "trace")
# where a parity judge is given the other flow's answer, by FlowInfo.kind
REFERENCE_PARAMS = {"evaluator": ("ground_truth",), "scorer": ("expectations",)}
# the parameters that take a model configuration (azure-ai-evaluation's prompty-based evaluators)
MODEL_CONFIG_KEYS = ("model_config",)


@dataclass(frozen=True)
class Located:
    """What the source says about ``module:attr``: where it is, what it is and what it takes."""

    file: Path
    line: int
    kind: str  # "class" | "function" | "value" (an instance made at module level: ``x = Scorer(...)``)
    # name -> required; None when it cannot be told (an inherited method)
    init_params: dict[str, bool] | None = None
    call_params: dict[str, bool] | None = None
    decorators: tuple[str, ...] = field(default_factory=tuple)
    init_open: bool = False  # __init__ also takes **kwargs: names beyond init_params may be right
    call_open: bool = False


def split_ref(ref: str) -> tuple[str, str]:
    module, _, attr = ref.partition(":")
    return module, attr


def module_file(module: str, roots: tuple[Path, ...] = ()) -> Path | None:
    """The source file of ``module`` (a package's ``__init__.py``), found without importing anything of it:
    first below ``roots`` (the project's own modules), then where Python would find it."""
    parts = module.split(".")
    if not all(p.isidentifier() for p in parts):
        return None
    for root in roots:
        found = _walk([root], parts)
        if found is not None:
            return found
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name only: nothing is imported
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if len(parts) == 1:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    locations = [Path(p) for p in (spec.submodule_search_locations or [])]
    return _walk(locations, parts[1:])


def _walk(locations: list[Path], parts: list[str]) -> Path | None:
    for base in locations:
        here = base
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last and (here / f"{part}.py").is_file():
                return here / f"{part}.py"
            if (here / part).is_dir():
                here = here / part
                continue
            here = Path()
            break
        else:
            if (here / "__init__.py").is_file():
                return here / "__init__.py"
    return None


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef, skip_self: bool) -> dict[str, bool]:
    """name -> required (``*args``/``**kwargs`` left out: see ``_open``)."""
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    if skip_self and positional:
        positional = positional[1:]
    n_defaults = len(args.defaults)
    out = {a.arg: i < len(positional) - n_defaults for i, a in enumerate(positional)}
    for a, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        out[a.arg] = default is None
    return out


def _decorator_names(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> tuple[str, ...]:
    names = []
    for dec in fn.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        names.append(ast.unparse(target).rsplit(".", 1)[-1])
    return tuple(names)


def _open(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return fn.args.kwarg is not None


def _method(cls: ast.ClassDef, name: str) -> tuple[dict[str, bool] | None, bool]:
    """The parameters of ``cls.name`` and whether it also takes ``**kwargs``: the union of its ``@overload``
    signatures when there are any (their implementation takes ``*args, **kwargs``), else the implementation's;
    (None, True) when it is not written in the class (inherited: cannot tell)."""
    defs = [n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name]
    overloads = [d for d in defs if "overload" in _decorator_names(d)]
    chosen = overloads or defs
    if not chosen:
        return None, True
    signatures = [_params(fn, skip_self=True) for fn in chosen]
    # required only when every overload requires it (another overload may be called without it)
    merged = {key: all(sig.get(key, False) for sig in signatures) for sig in signatures for key in sig}
    return merged, any(_open(fn) for fn in chosen)


def locate(ref: str, roots: tuple[Path, ...] = ()) -> Located | str:
    """``module:attr`` found in source, or why it cannot be (a sentence for a lint message)."""
    module, attr = split_ref(ref)
    path = module_file(module, roots)
    if path is None:
        where = " or below the project folder" if roots else ""
        return (f"module '{module}' is not installed{where}; install the package that provides it (azure-ai-evaluation "
                "and mlflow come with the [agents] and [mlflow] extras)")
    for _ in range(MAX_HOPS):
        tree = _parse(path)
        if tree is None:
            return f"{path} does not parse"
        found = _find(tree, attr)
        if isinstance(found, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef, ast.Assign, ast.AnnAssign)):
            return _describe(path, found)
        if isinstance(found, tuple):  # re-exported: from <module> import <attr> [as ...]
            source_module, source_attr = found
            base = module if path.name == "__init__.py" else module.rpartition(".")[0]
            target = _absolute(source_module, base)
            if target is None:
                break
            next_path = module_file(target, roots)
            if next_path is None:
                return f"'{attr}' comes from module '{target}', which is not installed"
            module, attr, path = target, source_attr, next_path
            continue
        break
    return f"module '{module}' ({path}) has no '{attr}'"


def _absolute(name: str, package: str) -> str | None:
    """``name`` as written in ``from <name> import``: leading dots count up from ``package``."""
    if not name.startswith("."):
        return name
    dots = len(name) - len(name.lstrip("."))
    parts = package.split(".")
    if dots - 1 > len(parts):
        return None
    base = parts[: len(parts) - (dots - 1)]
    rest = name[dots:]
    return ".".join([*base, rest] if rest else base)


def _find(tree: ast.Module, attr: str) -> ast.AST | tuple[str, str] | None:
    found: ast.AST | tuple[str, str] | None = None
    body = list(tree.body)
    for node in list(body):  # names imported under ``if TYPE_CHECKING:`` (a lazy module's real home) count too
        if isinstance(node, ast.If):
            body += [n for n in [*node.body, *node.orelse] if isinstance(n, ast.ImportFrom)]
    for node in body:
        if _defines(node, attr):
            found = node
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == attr:
                    found = ("." * node.level + (node.module or ""), alias.name)
    return found


def _defines(node: ast.AST, attr: str) -> bool:
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return node.name == attr
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == attr for t in node.targets)
    return isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == attr


def _describe(path: Path, node: ast.AST) -> Located:
    line = getattr(node, "lineno", 1)
    if isinstance(node, ast.ClassDef):
        init, init_open = _method(node, "__init__")
        call, call_open = _method(node, "__call__")
        return Located(path, line, "class", init, call, _decorator_names(node), init_open, call_open)
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return Located(path, line, "function", None, _params(node, skip_self=False), _decorator_names(node),
                       call_open=_open(node))
    return Located(path, line, "value")


# --- what a run needs ----------------------------------------------------------------------------------------

def is_scorer(evaluation: Evaluation) -> bool:
    return evaluation.scorer is not None


def call_parameters(evaluation: Evaluation, found: Located | None) -> tuple[dict[str, bool] | None, bool]:
    """(the names a column_mapping may give, whether others may be right too): the evaluator's ``__call__``
    parameters, or a function evaluator's; a scorer is called with MLflow's (an ``@scorer`` function's own)."""
    if is_scorer(evaluation):
        if found is not None and found.kind == "function" and found.call_params is not None:
            return {k: v for k, v in found.call_params.items() if k in SCORER_PARAMS}, False
        return dict.fromkeys(SCORER_PARAMS, False), False
    if found is None or found.kind == "value":
        return None, True
    return found.call_params, found.call_open or found.call_params is None


def evaluation_info(evaluation: Evaluation, root: Path) -> FlowInfo:
    """The evaluation as a ``FlowInfo`` (kind ``evaluator``) so runs, engines and lint treat it like a flow."""
    found = locate(evaluation.ref or "", (root,))
    located = found if isinstance(found, Located) else None
    definition = located.file if located is not None and _inside(located.file, root) else root
    params = call_parameters(evaluation, located)[0] or {}
    info = FlowInfo(kind="scorer" if is_scorer(evaluation) else "evaluator", folder=root, definition=definition,
                    engine=ENGINE, served_by=None, outputs_open=True,
                    inputs={name: FlowInput(name, "object", not required) for name, required in params.items()})
    info.init_params = located.init_params if located is not None else None
    return info


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def model_connection(init: dict[str, object]) -> tuple[str, str] | None:
    """(init key, connection name) of a model configuration given as ``{connection: <declared>, ...}``."""
    for key, value in init.items():
        if isinstance(value, dict) and isinstance(value.get("connection"), str):
            return key, value["connection"]
    return None


def evaluator_files(evaluation: Evaluation, root: Path) -> list[Path]:
    """The project's own source file of an evaluator/scorer (what a change to it changes); none for a library's."""
    found = locate(evaluation.ref or "", (root,))
    return [found.file] if isinstance(found, Located) and _inside(found.file, root) else []
