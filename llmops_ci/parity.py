"""The parity gate: a flow's outputs compared with another flow's (the one it replaces) on the same lines.

``parity: {of, outputs: {new: old}, method}`` on a flow. Both flows' batch runs are read from the state
dir and paired line by line (``pair_lines``); each pair agrees or not:

- ``exact``: every paired output is equal (as JSON values);
- ``normalized``: equal after Unicode NFKC, case folding, blank runs collapsed and outer blanks and
  trailing punctuation removed;
- ``<evaluation>``: that evaluation (an ``evaluator:``/``scorer:``) judges each pair: it is called with
  its own column_mapping, except that its reference parameter (``ground_truth`` for azure-ai-evaluation
  evaluators, ``expectations`` for MLflow scorers) is the other flow's output; a pair agrees when the
  evaluator passes it (``<metric>_result == "pass"``; a scorer's yes/true), and the evaluator's own
  metrics come along (its ``similarity``, say).

A line that failed on either side is a disagreement (nothing shows it agrees). The result is an evaluation
named ``parity`` (metrics ``agreement``, ``lines``, ``disagreements``; per-line agreement in its
``lines.jsonl``) that gates like any other: ``parity.agreement: {min: 0.95}``.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_ci.config import Config, FlowSpec
from llmops_ci.core.errors import UsageError
from llmops_ci.engines.mapping import read_rows
from llmops_ci.project.evaluators import REFERENCE_PARAMS, evaluation_info
from llmops_ci.results.records import (
    LineResult,
    LineStatus,
    RunJob,
    RunOptions,
    RunRecord,
    cache_settings,
    init_arguments,
    init_connections,
    provider_connections,
    run_name,
)
from llmops_ci.results.state import write_json_atomic
from llmops_ci.results.store import run_dir

log = logging.getLogger("llmops_ci.run")
NAME = "parity"
SHOWN = 5  # disagreeing lines kept for the comment
TEXT_LIMIT = 300
_PUNCT_END = re.compile(r"[\s.!?;:,]+$")


@dataclass(frozen=True)
class Pair:
    line: int  # the data line both runs read (0-based)
    new: dict[str, Any] | None  # this flow's outputs, None when its line failed or is missing
    old: dict[str, Any] | None
    inputs: dict[str, Any]


def read_lines(state_dir: Path, flow: str) -> dict[int, dict[str, Any]]:
    """A flow's batch-run records by data line, from ``runs/<flow>/lines.jsonl``."""
    path = run_dir(state_dir, flow) / "lines.jsonl"
    if not path.is_file():
        raise UsageError(f"flow '{flow}' has no batch run in {state_dir}; parity needs both flows' runs: run "
                         f"'llmops-ci batch-run' for both (with the same --state-dir) first")
    out: dict[int, dict[str, Any]] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            raise UsageError(f"{path}:{number}: not a JSON line; run batch-run again") from None
        if isinstance(record, dict) and isinstance(record.get("line"), int):
            out[record["line"]] = record
    return out


def pair_lines(new: Mapping[int, dict[str, Any]], old: Mapping[int, dict[str, Any]]) -> list[Pair]:
    """The two runs' lines paired. Both flows read the same data (checked before), so a line's index in it is
    its key; this is the one place that decides pairing (a line key from the config would plug in here)."""
    pairs = []
    for line in sorted(set(new) | set(old)):
        a, b = new.get(line), old.get(line)
        pairs.append(Pair(line, _outputs(a), _outputs(b), dict((a or b or {}).get("inputs") or {})))
    return pairs


def _outputs(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None or record.get("status") != "Completed":
        return None
    outputs = record.get("outputs")
    return outputs if isinstance(outputs, dict) else {"output": outputs}


def normalized(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = " ".join(unicodedata.normalize("NFKC", value).casefold().split())
    return _PUNCT_END.sub("", text)


def agrees(pair: Pair, outputs: dict[str, str], method: str) -> bool:
    if pair.new is None or pair.old is None:
        return False
    for new_name, old_name in outputs.items():
        a, b = pair.new.get(new_name), pair.old.get(old_name)
        if method == "normalized":
            a, b = normalized(a), normalized(b)
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            return False
    return True


def side(outputs: dict[str, Any] | None, names: list[str]) -> Any:
    """What a side answered, for a line record: the paired outputs only (one value when one is paired)."""
    if outputs is None:
        return None
    picked = {n: outputs.get(n) for n in names}
    return picked[names[0]] if len(names) == 1 else picked


def check_same_data(config: Config, flow: FlowSpec) -> FlowSpec:
    """The flow parity compares with; refused when the two read different data (their lines would not pair)."""
    assert flow.parity is not None
    other = config.flows.get(flow.parity.of)
    if other is None:
        raise UsageError(f"{flow.origin.doc.display}: flow '{flow.name}': parity.of '{flow.parity.of}' is not a flow "
                         "of this config")
    if flow.data is None or other.data is None or flow.data.resolve() != other.data.resolve():
        raise UsageError(f"{flow.origin.doc.display}: parity of '{flow.name}' with '{other.name}' needs both flows to "
                         f"read the same data (they read {flow.data} and {other.data}); lines are paired by data line")
    return other


def with_compared(config: Config, flows: list[FlowSpec],
                  current: Callable[[FlowSpec], bool] = lambda flow: False) -> list[FlowSpec]:
    """``flows`` plus each flow a selected flow's parity compares with, unless its run is ``current`` (finished on
    its content and data as they are now, so its lines and evaluations stand): both flows' lines must exist on
    the same data (``--flow new`` alone would leave nothing to pair with)."""
    names = {f.name for f in flows}
    out = list(flows)
    for flow in flows:
        other = config.flows.get(flow.parity.of) if flow.parity is not None else None
        if other is not None and other.name not in names:
            names.add(other.name)
            if current(other):
                log.info("%s: '%s', which its parity compares with, has a current run; kept", flow.name, other.name)
                continue
            log.info("%s: also running '%s', which its parity compares with", flow.name, other.name)
            out.append(other)
    return out


# --- the judge: an evaluation as the parity method --------------------------------------------------------------

def judge_job(config: Config, flow: FlowSpec, pairs: list[Pair], options: RunOptions, environ: Mapping[str, str],
              work: Path) -> RunJob | None:
    """A run of the method evaluation over the paired lines (None for exact/normalized). Its data is written to
    ``work``: each line is the data line plus ``parity_new.<output>`` and ``parity_old.<output>`` columns."""
    assert flow.parity is not None
    evaluation = flow.evaluations.get(flow.parity.method)
    if evaluation is None:
        return None
    if evaluation.ref is None:
        raise UsageError(f"{flow.origin.doc.display}: parity.method '{evaluation.name}' is an evaluation flow; a "
                         "parity method is exact, normalized or an evaluator:/scorer: evaluation")
    info = evaluation_info(evaluation, config.root)
    reference = next((p for p in REFERENCE_PARAMS[info.kind] if p in info.inputs), None)
    if reference is None:
        raise UsageError(f"{evaluation.origin.doc.display}: parity.method '{evaluation.name}': {evaluation.ref} has no "
                         f"reference parameter ({', '.join(REFERENCE_PARAMS[info.kind])}) to give the other flow's "
                         "output to")
    old_name = next(iter(flow.parity.outputs.values()))
    mapping: dict[str, Any] = {}
    for key, value in evaluation.column_mapping.items():
        if isinstance(value, str) and value.startswith("${run.outputs.") and value.endswith("}"):
            value = "${data.parity_new." + value[len("${run.outputs."):-1] + "}"
        elif isinstance(value, str) and value.startswith("${run.inputs."):
            value = "${data." + value[len("${run.inputs."):]
        mapping[key] = value
    mapping[reference] = "${data.parity_old." + old_name + "}"
    if not any(isinstance(v, str) and "parity_new." in v for v in mapping.values()):
        raise UsageError(f"{evaluation.origin.doc.display}: parity.method '{evaluation.name}' maps no "
                         "${run.outputs.<output>}; map the response parameter to this flow's output")
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"{flow.name}.parity.jsonl"
    rows = _data_rows(flow)
    with data.open("w", encoding="utf-8") as fh:
        for pair in pairs:
            if pair.new is None or pair.old is None:
                continue
            row = dict(rows[pair.line]) if pair.line < len(rows) else dict(pair.inputs)
            row.update({f"parity_new.{k}": v for k, v in pair.new.items()})
            row.update({f"parity_old.{k}": v for k, v in pair.old.items()})
            fh.write(json.dumps(row, default=str) + "\n")
    cache = cache_settings(config, flow.name, options.llm_cache, evaluation=NAME)
    connections = provider_connections(config, init_connections(config, evaluation.init), environ,
                                       lenient=cache is not None)
    return RunJob(flow=flow.name, evaluation=NAME, name=run_name(f"{flow.name}_{NAME}"), path=evaluation.path,
                  info=info, data=data,
                  column_mapping=mapping, variant=None, connections={}, environment_variables={},
                  provider_connections=connections, options=options, cache=cache,
                  init=init_arguments(evaluation.origin, evaluation.init, environ, lenient=cache is not None),
                  evaluator=evaluation.ref)


def _data_rows(flow: FlowSpec) -> list[dict[str, Any]]:
    return read_rows(flow.data) if flow.data is not None else []


def judged_agreement(outputs: Any) -> bool | None:
    """Whether the judge passed a pair: an azure-ai-evaluation ``*_result`` pass/fail, else a scorer's yes/true."""
    if not isinstance(outputs, dict):
        return None
    results = [v for k, v in outputs.items() if k.endswith("_result") and v in ("pass", "fail")]
    if results:
        return all(v == "pass" for v in results)
    values = [v for k, v in outputs.items() if not k.endswith(("_rationale", "_label", "_threshold"))]
    flags = [v for v in values if isinstance(v, bool) or v in (0.0, 1.0)]
    return all(bool(v) for v in flags) if flags else None


# --- the result ---------------------------------------------------------------------------------------------------

def parity_record(flow: FlowSpec, pairs: list[Pair], judged: RunRecord | None, duration_s: float) -> RunRecord:
    """The ``parity`` evaluation: one line per data line with its agreement, and the metrics."""
    assert flow.parity is not None
    outputs = flow.parity.outputs
    new_names, old_names = list(outputs), list(outputs.values())
    by_line: dict[int, LineResult] = {}
    if judged is not None:
        # the judge's data lines are the complete pairs only, in order: map its line numbers back to data lines
        complete = [p.line for p in pairs if p.new is not None and p.old is not None]
        by_line = {complete[r.line]: r for r in judged.lines if 0 <= r.line < len(complete)}
    lines = []
    for pair in pairs:
        result: dict[str, Any] = {"new": side(pair.new, new_names), "old": side(pair.old, old_names)}
        status: LineStatus = "Completed"
        error = None
        if pair.new is None or pair.old is None:
            agree: bool | None = False
            result["note"] = " and ".join(n for n, s in ((flow.name, pair.new), (flow.parity.of, pair.old))
                                          if s is None) + " failed (or did not run) on this line"
        elif judged is not None:
            scored = by_line.get(pair.line)
            agree = judged_agreement(scored.outputs) if scored is not None and scored.status == "Completed" else None
            if scored is not None and isinstance(scored.outputs, dict):
                result["judge"] = scored.outputs
            if agree is None:
                status = "Failed"
                error = (scored.error if scored is not None and scored.error else
                         f"the parity method '{flow.parity.method}' gave no pass/fail for this line")
        else:
            agree = agrees(pair, outputs, flow.parity.method)
        result["agreement"] = None if agree is None else (1.0 if agree else 0.0)
        tokens = by_line[pair.line].tokens if pair.line in by_line else {}
        lines.append(LineResult(pair.line, status, {"line": pair.line}, result, None, tokens, error=error))
    decided = [line for line in lines if line.status == "Completed"]
    agreeing = sum(1 for line in decided if line.outputs["agreement"] == 1.0)
    metrics: dict[str, Any] = {"agreement": round(agreeing / len(decided), 6) if decided else float("nan"),
                               "lines": len(decided), "disagreements": len(decided) - agreeing}
    if judged is not None:
        metrics.update({k: v for k, v in judged.metrics.items() if k not in metrics})
    llm_cache = judged.llm_cache if judged is not None else None
    return RunRecord(flow.name, judged.name if judged is not None else f"{flow.name}_{NAME}", "Completed",
                     lines, duration_s, metrics, None, llm_cache, data_lines=len(pairs), evaluation=NAME)


def disagreements(record: RunRecord, limit: int = SHOWN) -> list[dict[str, Any]]:
    """The first disagreeing lines, side by side, for the comment (text cut to a bounded length)."""
    out = []
    for line in record.lines:
        if isinstance(line.outputs, dict) and line.outputs.get("agreement") == 0.0:
            out.append({"line": line.line + 1, "new": _short(line.outputs.get("new")),
                        "old": _short(line.outputs.get("old"))})
            if len(out) >= limit:
                break
    return out


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


def summary_entry(flow: FlowSpec, record: RunRecord, summary: dict[str, Any]) -> dict[str, Any]:
    """``flows.<flow>.evaluations.parity`` in summary.json: an evaluation's entry plus what the comment shows."""
    assert flow.parity is not None
    return {"run": record.name, "status": summary["status"], "metrics": record.metrics,
            "lines_total": summary["lines_total"], "lines_failed": summary["lines_failed"], "of": flow.parity.of,
            "method": flow.parity.method, "disagreeing": disagreements(record)}


def write_pairs(state_dir: Path, flow: str, pairs: list[Pair]) -> None:
    """How the lines were paired (for a reader of the state dir): data line -> whether each side completed."""
    write_json_atomic(run_dir(state_dir, flow, NAME) / "pairs.json",
                      [{"line": p.line, "new": p.new is not None, "old": p.old is not None} for p in pairs])
