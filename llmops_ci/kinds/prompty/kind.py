"""``.prompty`` files, in prompt flow's format or the ``prompty`` 2.x package's, checked statically.

Two formats share the extension. Prompt flow's (``promptflow.core.Prompty``): ``model: {api,
configuration, parameters, response}``, ``inputs: {name: {type, default}}``, ``sample``. The
``prompty`` package 2.x (``prompty.load``): ``model: {id, provider, apiType, connection, options}``,
``inputs:`` a list of ``{name, kind, default}``, ``template: {format, parser}``. A file that uses
any key only 2.x has is meant for 2.x; any prompt flow key left in it is then an error naming the
2.x key that replaced it (2.x rejects some and silently ignores the others). Anything else is read
as prompt flow's format.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from llmops_ci.core.errors import UsageError
from llmops_ci.core.safe_copy import copy_tree
from llmops_ci.core.yamldoc import display_path
from llmops_ci.diagnostics.findings import Rule
from llmops_ci.kinds.base import FlowInfo, Snapshot
from llmops_ci.kinds.prompty.checker import PROMPTY_RULES, PromptyChecker, beside_flex_code, prompty_files
from llmops_ci.kinds.prompty.format import (
    FLOW_FILES,
    file_format,
)


def prompty_rules() -> list[Rule]:
    return list(PROMPTY_RULES.values())


class PromptyFlowKind:
    """A ``.prompty`` file, or a folder holding exactly one and no DAG/flex flow file."""

    name = "prompty"

    def matches(self, path: Path) -> bool:
        if path.is_file():
            return path.suffix == ".prompty"
        if not path.is_dir() or any((path / f).is_file() for f in FLOW_FILES) or beside_flex_code(path):
            return False
        return len(prompty_files(path)) == 1

    def definition(self, path: Path) -> Path:
        return path if not path.is_dir() else prompty_files(path)[0]

    def inspect(self, path: Path) -> FlowInfo:
        return PromptyChecker(self.definition(path)).run()

    def rules(self) -> list[Rule]:
        return prompty_rules()

    def format_of(self, info: FlowInfo) -> str | None:
        """PROMPTFLOW (run it on prompt flow) or PROMPTY2 (run it with the prompty package); None: unreadable."""
        return file_format(info.definition)

    def snapshot(self, info: FlowInfo, dest: Path, *, variant: str | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> Snapshot:
        """The prompty's folder copied to ``dest`` (files a prompty reads are beside it: ${file:...})."""
        if variant is not None:
            raise UsageError(f"{display_path(info.definition)}: a prompty file has no variants; remove 'variant:'")
        if overrides:
            raise UsageError(f"{display_path(info.definition)}: 'connections:' overrides are for DAG nodes; a "
                             "prompty file names its connection in its own model configuration")
        if dest.exists():
            shutil.rmtree(dest)
        copy_tree(info.folder, dest, ignore=shutil.ignore_patterns(".git", "__pycache__", ".venv", ".llmops"))
        return Snapshot(dest, dest / info.definition.name)


