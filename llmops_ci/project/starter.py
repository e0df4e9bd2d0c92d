"""A starter ``llmops.yaml`` for the flows found below a folder (``llmops-ci init``).

Everything here is read statically (the kinds' ``inspect``, the data files' columns): no flow code runs and no
framework is imported. What cannot be known (which metric an evaluation logs, which data column holds the label)
is written as a comment that says what to fill in, never as a guess that lint would pass but a run would get wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from llmops_ci.kinds import inspect
from llmops_ci.kinds.base import FlowInfo
from llmops_ci.project.data import SUFFIXES, DataInfo, read_data
from llmops_ci.project.discover import discover

_SKIP_DATA_DIRS = {".git", ".llmops", ".venv", "venv", "node_modules", "__pycache__", "cassettes", ".ci"}
# names evaluation flows give the expected answer, and the data columns that usually hold it
_TRUTH_INPUTS = ("groundtruth", "ground_truth", "answer", "expected", "label", "truth")
_TRUTH_COLUMNS = ("groundtruth", "ground_truth", "label", "answer", "expected", "category", "truth")
# a sample line's value per input type: prompt flow parses a list or object column as JSON, so "" would fail the line
_SAMPLE: dict[str, object] = {"list": [], "object": {}, "int": 0, "double": 0.0, "bool": False}
_CONNECTION_FIELDS = {
    "open_ai": [("base_url", "${env:OPENAI_BASE_URL}"), ("api_key", "${env:OPENAI_API_KEY}")],
    "azure_open_ai": [("api_base", "${env:AZURE_OPENAI_ENDPOINT}"), ("api_key", "${env:AZURE_OPENAI_API_KEY}"),
                      ("api_version", '"2024-06-01"')],
}


@dataclass
class FoundFlow:
    name: str
    path: Path  # relative to the config's folder
    info: FlowInfo
    evaluation: bool


@dataclass
class Starter:
    """What ``init`` writes: the config text and the sample data files it needs (path relative to the root)."""

    text: str
    data_files: dict[Path, str] = field(default_factory=dict)
    flows: list[FoundFlow] = field(default_factory=list)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")
    return slug if slug and slug[0].isalnum() else f"flow-{slug}".rstrip("-")


def _is_evaluation(path: Path) -> bool:
    return any(part.lower().startswith("eval") or part.lower().endswith(("eval", "evaluation"))
               for part in (path.stem, path.name))


def find_flows(root: Path, base: Path) -> list[FoundFlow]:
    found: list[FoundFlow] = []
    names: set[str] = set()
    for path in discover(root):
        info = inspect(path)
        if info is None or not info.loaded:
            continue
        rel = path.relative_to(base)
        stem = _slug(path.stem if path.is_file() else path.name)
        name, n = stem, 2
        while name in names:
            name, n = f"{stem}-{n}", n + 1
        names.add(name)
        found.append(FoundFlow(name, rel, info, _is_evaluation(rel)))
    return found


def _data_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in _SKIP_DATA_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        if path.suffix in SUFFIXES and path.is_file() and path.stat().st_size < 50_000_000:
            files.append(path)
    return files


def _columns(path: Path, cache: dict[Path, DataInfo]) -> set[str]:
    if path not in cache:
        cache[path] = read_data(path)
    info = cache[path]
    if info.fatal or info.errors or not info.rows:
        return set()
    return {c for c, n in info.columns.items() if n == info.rows}


def _pick_data(flow: FoundFlow, root: Path, files: list[Path], cache: dict[Path, DataInfo]) -> Path | None:
    """The data file that has a column for every input without a default, preferring the flow's own folder and
    the most inputs covered."""
    required = {n for n, i in flow.info.inputs.items() if not i.has_default}
    best: tuple[int, int, Path] | None = None
    folder = root / flow.path if (root / flow.path).is_dir() else (root / flow.path).parent
    for path in files:
        columns = _columns(path, cache)
        if not columns or not required <= columns:
            continue
        covered = len(set(flow.info.inputs) & columns)
        if covered == 0:
            continue
        near = 1 if folder in path.parents else 0
        if best is None or (covered, near) > best[:2]:
            best = (covered, near, path)
    return best[2] if best else None


def _connection_type(flow_infos: list[FlowInfo], name: str) -> str:
    for info in flow_infos:
        for use in info.connections:
            if use.connection == name and "deployment_name" in use.params:
                return "azure_open_ai"
    return "open_ai"


def build(root: Path, base: Path) -> Starter:
    """The config for the flows below ``root``, written in ``base`` (the config's folder; ``root`` is inside it):
    paths are relative to ``base``."""
    flows = find_flows(root, base)
    if not flows:
        raise LookupError(f"no flows found in or below {root}")
    cache: dict[Path, DataInfo] = {}
    files = _data_files(root)
    starter = Starter("", flows=flows)
    mains = [f for f in flows if not f.evaluation] or flows
    evaluations = [f for f in flows if f.evaluation and f not in mains]
    lines = ["# llmops-ci config written by 'llmops-ci init'; see docs/configuration.md for every key.",
             "# Paths are relative to this file. Secrets only ever come from the environment (${env:NAME}).",
             "version: 1", "",
             "# LLM calls are recorded into cassettes/ on the first run and replayed after (offline, no key).",
             "llm_cache:", "  mode: auto", ""]
    connection_names = sorted({u.connection for f in flows for u in f.info.connections if u.connection})
    if connection_names:
        lines.append("connections:")
        for name in connection_names:
            ctype = _connection_type([f.info for f in flows], name)
            lines += [f"  {name}:", f"    type: {ctype}"]
            lines += [f"    {key}: {value}" for key, value in _CONNECTION_FIELDS[ctype]]
        lines.append("")
    lines.append("flows:")
    for flow in mains:
        lines += _flow_lines(flow, base, files, cache, starter, evaluations if len(mains) == 1 else [])
    if evaluations and len(mains) > 1:
        lines += ["", "# Evaluation flows found below this folder; add each under the flow it scores, e.g.:"]
        for ev in evaluations:
            lines += ["#   evaluations:", f"#     {ev.name}:", f"#       path: {ev.path.as_posix()}"]
    starter.text = "\n".join(lines).rstrip() + "\n"
    return starter


def _flow_lines(flow: FoundFlow, root: Path, files: list[Path], cache: dict[Path, DataInfo], starter: Starter,
                evaluations: list[FoundFlow]) -> list[str]:
    info = flow.info
    out = [f"  {flow.name}:", f"    path: {flow.path.as_posix()}          # a {info.kind} flow"]
    data = _pick_data(flow, root, files, cache)
    if data is None:
        data = Path("data") / f"{flow.name}.jsonl"
        while data in starter.data_files or (root / data).exists():
            data = data.with_name(data.stem + "-sample.jsonl")
        row = {n: _SAMPLE.get(i.type.lower(), "") for n, i in info.inputs.items()}
        starter.data_files[data] = json.dumps(row) + "\n"
        out.append(f"    data: {data.as_posix()}          # a one-line sample 'init' wrote: put your test cases here")
        columns = set(row)
    else:
        data = data.relative_to(root)
        out.append(f"    data: {data.as_posix()}")
        columns = _columns(root / data, cache)
    mapped = [n for n in info.inputs if n in columns]
    if mapped:
        out.append("    column_mapping:")
        out += [f"      {n}: ${{data.{n}}}" for n in mapped]
    defaults = [n for n in info.inputs if n not in columns]
    if defaults:
        out.append(f"      # not mapped (their defaults are used): {', '.join(defaults)}" if mapped else
                   f"    # inputs left on their defaults: {', '.join(defaults)}")
    out.append("    max_failed_lines: 0")
    blocks = [_evaluation_lines(ev, info, columns) for ev in evaluations]
    if blocks:
        active = any(not commented for commented, _ in blocks)
        out.append("    evaluations:" if active else "    # evaluations:")
        out += [line for _, block in blocks for line in block]
    out += ["    gate:", "      run.lines_failed: {max: 0}",
            "      # <evaluation>.<metric>: {min: 0.8, max_drop: 0.05, significant: true}"]
    out.append("")
    return out


def _evaluation_lines(ev: FoundFlow, base: FlowInfo, columns: set[str]) -> tuple[bool, list[str]]:
    """The evaluation's block, and whether it is commented out (an input no data column or output could fill)."""
    mapping: dict[str, str] = {}
    unresolved: list[str] = []
    single_output = next(iter(base.outputs)) if len(base.outputs) == 1 else None
    for name, spec in ev.info.inputs.items():
        if name in base.outputs:
            mapping[name] = f"${{run.outputs.{name}}}"
        elif name in columns:
            mapping[name] = f"${{data.{name}}}"
        elif name.lower() in _TRUTH_INPUTS and (col := next((c for c in _TRUTH_COLUMNS if c in columns), None)):
            mapping[name] = f"${{data.{col}}}"
        elif single_output is not None and name.lower() in ("prediction", "output", "answer", "response"):
            mapping[name] = f"${{run.outputs.{single_output}}}"
        elif not spec.has_default:
            unresolved.append(name)
    defaulted = [n for n in ev.info.inputs if n not in mapping and n not in unresolved]
    prefix = "#" if unresolved else " "
    out = [f"{prefix}     {ev.name}:", f"{prefix}       path: {ev.path.as_posix()}"]
    if mapping:
        out.append(f"{prefix}       column_mapping:")
        out += [f"{prefix}         {k}: {v}" for k, v in mapping.items()]
    if defaulted:
        outputs = ", ".join(sorted(base.outputs)) or "none"
        out.append(f"{prefix}       # on their defaults until mapped: {', '.join(defaulted)} "
                   f"(the flow's outputs: {outputs})")
    if unresolved:
        out.insert(0, f"      # map {', '.join(unresolved)} (a data column or a run output), then uncomment:")
    return bool(unresolved), out
