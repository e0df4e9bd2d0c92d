"""What a verdict rests on: where the baseline came from, whether it is comparable, and which rules changed.

Every gate records its own run's provenance (``gate.provenance``: commit, time, data and evaluation content
hashes) so that, when its state dir is the next run's baseline, the next gate can say how old and how
comparable that baseline is. ``run.data_hash``/``run.finished`` (SPEC "What a result is") win when present.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from llmops_ci.config import FlowSpec
from llmops_ci.core.schema import as_dict
from llmops_ci.results.summary import FlowResult, GateProvenance, RunResult, Summary

STALE_S = 7 * 86400  # a baseline older than a week is shown as stale
_IGNORED = {"__pycache__", ".git", ".promptflow", ".runs", "node_modules"}


def content_hash(path: Path) -> str | None:
    """A short hash of a file or a folder's files (names and bytes), links not followed out of it."""
    digest = hashlib.sha256()
    try:
        if path.is_file():
            files = [(path.name, path)]
        elif path.is_dir():
            files = []
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in _IGNORED)
                for name in sorted(names):
                    file = Path(root) / name
                    if not name.endswith(".pyc") and file.is_file() and not file.is_symlink():
                        files.append((file.relative_to(path).as_posix(), file))
        else:
            return None
        for name, file in files:
            digest.update(name.encode("utf-8", "surrogatepass") + b"\0" + file.read_bytes() + b"\0")
    except OSError:
        return None
    return digest.hexdigest()[:12]


def run_provenance(flow: FlowSpec, commit: str | None, now: float | None = None) -> dict[str, Any]:
    """This run's: kept in its gate result, read back when its state dir serves as a baseline."""
    return {"commit": commit, "gated_at": _iso(now if now is not None else time.time()),
            "data_hash": content_hash(flow.data) if flow.data is not None else None,
            "evaluation_hashes": {name: content_hash(e.path) for name, e in sorted(flow.evaluations.items())}}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def changed_rules(flow: FlowSpec, baseline: Summary) -> list[dict[str, Any]]:
    """Gate limits (and burdens of proof) that differ from the baseline run's, from its gate's check rows."""
    entry = baseline.flows.get(flow.name)
    rows = entry.gate.checks if entry is not None and entry.gate is not None else ()
    if not rows:
        return []
    was: dict[tuple[str, str], Any] = {}
    was_test: dict[str, Any] = {}
    for row in rows:
        metric, kind = row.metric, row.rule
        if isinstance(metric, str) and isinstance(kind, str):
            was[(metric, kind)] = row.limit
            if kind in ("max_drop", "max_rise"):
                was_test[metric] = row.test or ("significant" if row.significant else None)
    now: dict[tuple[str, str], Any] = {}
    now_test: dict[str, Any] = {}
    for metric, rule in flow.gate.items():
        for kind in ("min", "max", "max_drop", "max_rise"):
            if getattr(rule, kind) is not None:
                now[(metric, kind)] = getattr(rule, kind)
        if rule.max_drop is not None or rule.max_rise is not None:
            now_test[metric] = rule.test or ("significant" if rule.significant else None)
    out = [{"metric": m, "rule": k, "was": was.get((m, k)), "now": now.get((m, k))}
           for m, k in sorted(set(was) | set(now)) if was.get((m, k)) != now.get((m, k))]
    out += [{"metric": m, "rule": "test", "was": was_test.get(m), "now": now_test.get(m)}
            for m in sorted(set(was_test) & set(now_test)) if was_test.get(m) != now_test.get(m)]
    return out


def baseline_provenance(flow: FlowSpec, summary: Summary, baseline: Summary, source: str,
                        current: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The baseline's commit, age, data and evaluation hashes beside this run's, with a warning per difference."""
    base_flow = baseline.flows.get(flow.name) or FlowResult()
    cur_flow = summary.flows.get(flow.name) or FlowResult()
    base_prov = base_flow.gate.provenance if base_flow.gate is not None else GateProvenance()
    base_run, cur_run = base_flow.run or RunResult(), cur_flow.run or RunResult()
    out: dict[str, Any] = {"source": source, "commit": base_run.commit or base_prov.commit}
    when = _timestamp(base_run.finished) or _timestamp(base_prov.gated_at)
    now = now if now is not None else time.time()
    out["age_s"] = max(0, round(now - when)) if when is not None else None
    if base_run.data_hash and cur_run.data_hash:
        base_data, cur_data = base_run.data_hash, cur_run.data_hash
    else:
        base_data, cur_data = base_prov.data_hash, current.get("data_hash")
    out["data_hash"] = base_data
    out["same_data"] = (base_data == cur_data) if base_data and cur_data else None
    base_evals = dict(base_prov.evaluation_hashes)
    cur_evals = as_dict(current.get("evaluation_hashes"))
    for name, entry in base_flow.evaluations.items():  # results' per-run content hash wins
        mine = cur_flow.evaluations.get(name)
        if entry.flow_hash and mine is not None and mine.flow_hash:
            base_evals[name] = entry.flow_hash
            cur_evals[name] = mine.flow_hash
    out["evaluation_hashes"] = base_evals
    warnings = []
    if out["same_data"] is False:
        warnings.append(f"the data changed since the baseline (data hash {base_data} then, {cur_data} now): "
                        "lines are paired by key; lines only one side has are not compared")
    changed = sorted(n for n in set(base_evals) & set(cur_evals) if base_evals[n] and base_evals[n] != cur_evals[n])
    out["same_evaluations"] = (not changed) if base_evals else None
    if changed:
        warnings.append(f"evaluation {', '.join(changed)} changed since the baseline: its judge scores differently, "
                        "so a change in its metrics may come from the judge")
    base_names = set(base_flow.evaluations)
    added, removed = sorted(set(flow.evaluations) - base_names), sorted(base_names - set(flow.evaluations))
    if base_names and (added or removed):
        warnings.append("the evaluation set changed since the baseline (" + ", ".join(
            [f"+{n}" for n in added] + [f"-{n}" for n in removed]) + ")")
    if out["age_s"] is not None and out["age_s"] > STALE_S:
        warnings.append(f"the baseline is {out['age_s'] // 86400} days old: re-run the target branch to refresh it")
    if out["commit"] is None and out["age_s"] is None:
        warnings.append("the baseline does not say which commit or when it ran (an older llmops-ci made it)")
    out["warnings"] = warnings
    return out
