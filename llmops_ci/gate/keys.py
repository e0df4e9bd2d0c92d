"""Line keys and clusters: what pairs a baseline's line with this run's, and which lines form one unit.

batch-run keeps ``runs/<flow>/line_keys.json`` beside the run's lines: per data line, the key ``line_key:``
names (default: a hash of the line's mapped inputs), the hash of its mapped inputs, and its ``cluster:``
value. The gate pairs the two runs by the best key both sides have, never by position unless neither has keys.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_ci.config import FlowSpec
from llmops_ci.core.errors import UsageError
from llmops_ci.core.yamldoc import display_path
from llmops_ci.results.state import write_json_atomic

FILE = "line_keys.json"
INPUTS = "inputs"  # the key kind of the default: a hash of the line's mapped inputs


def inputs_key(inputs: Any) -> str:
    text = json.dumps(inputs, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def column(ref: str | None) -> str | None:
    """``${data.doc}`` -> ``doc``."""
    return ref[len("${data."):-1] if ref and ref.startswith("${data.") and ref.endswith("}") else None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The data's rows as prompt flow reads them (JSON Lines objects, a .json list, CSV/TSV rows of strings)."""
    files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json", ".csv", ".tsv")) \
        if path.is_dir() else [path]
    rows: list[dict[str, Any]] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{display_path(file)}: cannot read the data ({exc})") from None
        if file.suffix in (".csv", ".tsv"):
            rows += [dict(r) for r in csv.DictReader(text.splitlines(), delimiter="\t" if file.suffix == ".tsv"
                                                     else ",")]
            continue
        try:
            values = json.loads(text) if file.suffix == ".json" else [json.loads(raw) for raw in text.split("\n")
                                                                      if raw.strip()]
        except ValueError as exc:
            raise UsageError(f"{display_path(file)}: not valid JSON ({exc}); lint names the line") from None
        rows += [v if isinstance(v, dict) else {} for v in (values if isinstance(values, list) else [])]
    return rows


def _unique(keys: list[str | None]) -> list[str | None]:
    """Two lines with the same key stay two lines: the second is ``key#2`` (in data order, on both sides)."""
    seen: dict[str, int] = {}
    out: list[str | None] = []
    for key in keys:
        if key is None:
            out.append(None)
            continue
        seen[key] = seen.get(key, 0) + 1
        out.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return out


def save_line_keys(folder: Path, flow: FlowSpec, lines: Iterable[tuple[int, Any]]) -> None:
    """Keep the keys of a batch run's lines (``(line index, mapped inputs)`` pairs) in ``folder``."""
    by_line = dict(lines)
    rows: list[dict[str, Any]] = []
    if (flow.line_key or flow.cluster) and flow.data is not None:
        rows = read_rows(flow.data)
    count = max([len(rows), *(i + 1 for i in by_line)]) if rows or by_line else 0
    key_col, cluster_col = column(flow.line_key), column(flow.cluster)

    def cell(index: int, name: str | None) -> str | None:
        if name is None or index >= len(rows) or rows[index].get(name) is None:
            return None
        value = rows[index][name]
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    inputs = _unique([inputs_key(by_line[i]) if i in by_line else None for i in range(count)])
    keys = _unique([cell(i, key_col) for i in range(count)]) if key_col else inputs
    clusters = [cell(i, cluster_col) for i in range(count)]
    write_json_atomic(folder / FILE, {
        "line_key": flow.line_key or INPUTS, "cluster": flow.cluster,
        "lines": [{"line": i, "key": keys[i], "inputs": inputs[i], "cluster": clusters[i]} for i in range(count)]})


@dataclass(frozen=True)
class LineKeys:
    kind: str  # the line_key: it was made with (``${data.id}``), INPUTS, or "line" (no keys: by position)
    keys: dict[int, str]  # line index -> key of that kind
    inputs: dict[int, str]
    cluster_of: str | None
    clusters: dict[int, str]


def load_line_keys(run_folder: Path | None) -> LineKeys | None:
    """The keys a batch run kept; for an older run, its lines' mapped inputs; None when neither is there."""
    if run_folder is None:
        return None
    try:
        data = json.loads((run_folder / FILE).read_text(encoding="utf-8"))
        lines = [x for x in data["lines"] if isinstance(x, dict) and isinstance(x.get("line"), int)]
        return LineKeys(str(data["line_key"]), {x["line"]: str(x["key"]) for x in lines if x.get("key")},
                        {x["line"]: str(x["inputs"]) for x in lines if x.get("inputs")},
                        data.get("cluster") if isinstance(data.get("cluster"), str) else None,
                        {x["line"]: str(x["cluster"]) for x in lines if x.get("cluster") is not None})
    except (OSError, ValueError, KeyError, TypeError):
        pass
    records: dict[int, Any] = {}
    try:
        with (run_folder / "lines.jsonl").open(encoding="utf-8") as fh:
            for raw in fh:
                record = json.loads(raw) if raw.strip() else None
                if isinstance(record, dict) and isinstance(record.get("line"), int) and "inputs" in record:
                    records[record["line"]] = record["inputs"]
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not records:
        return None
    order = sorted(records)
    hashes = dict(zip(order, _unique([inputs_key(records[i]) for i in order]), strict=True))
    return LineKeys(INPUTS, {i: h for i, h in hashes.items() if h}, {i: h for i, h in hashes.items() if h}, None,
                    {})


@dataclass(frozen=True)
class Pairing:
    kind: str  # what pairs the lines: the line_key (``${data.id}``), INPUTS, or "line" (by position)
    current: dict[int, str]  # line index -> key
    baseline: dict[int, str]
    clusters: dict[str, str] | None  # key -> cluster (from this run), when cluster: is set
    note: str | None = None


def pair(flow: FlowSpec, current: LineKeys | None, baseline: LineKeys | None, *, same_data: bool = False) -> Pairing:
    """The best key both runs have: the configured line_key, else the mapped-inputs hash, else the position.
    ``same_data``: the other run is a sibling flow over the same data file (``against:``), whose mapped inputs
    differ from this flow's: without the same line_key on both, its lines pair by line number, silently."""
    clusters = None
    if flow.cluster and (current is None or current.cluster_of != flow.cluster):
        raise UsageError(f"flow '{flow.name}': cluster: {flow.cluster} is set but this run's lines have no "
                         f"cluster values; run 'llmops-ci batch-run --flow {flow.name}' again (it records them)")
    note = None
    # a sibling flow maps other inputs from the same lines: its default keys (hashes of its mapped inputs) never
    # match this flow's, so only a configured line_key pairs it; otherwise its lines pair by line number
    sibling_defaults = same_data and current is not None and current.kind == INPUTS
    if current is not None and baseline is not None and current.kind == baseline.kind and current.keys \
            and not sibling_defaults:
        kind, cur, base = current.kind, current.keys, baseline.keys
    elif same_data:
        kind, cur, base = "line", {}, {}
    elif current is not None and baseline is not None and current.inputs and baseline.inputs:
        kind, cur, base = INPUTS, current.inputs, baseline.inputs
        if flow.line_key:
            note = f"the baseline has no {flow.line_key} keys: paired by the lines' mapped inputs"
    else:
        kind, cur, base = "line", {}, {}
        note = "paired by line number: the baseline (or this run) kept no line keys"
    if flow.cluster and current is not None:
        keyed = cur if kind != "line" else {i: str(i) for i in current.clusters}
        clusters = {keyed[i]: c for i, c in current.clusters.items() if i in keyed}
    return Pairing(kind, cur, base, clusters, note)
