"""Child process that scores lines with an azure-ai-evaluation evaluator or an MLflow 3 scorer, in the real library.

It runs as ``python -m llmops_ci.engines.evaluators.runner``; the request comes on stdin as JSON (``ref``
module:attr, ``scorer``, ``roots``, ``init``, ``lines`` as [line number, inputs] pairs, ``workers``,
``line_timeout``, ``name``, ``progress``, ``result``). Each finished line is appended to ``progress``; the
result (every line and the metrics) is written to ``result``. Metrics are the library's own aggregation:
azure-ai-evaluation's ``_aggregate_metrics`` (means, pass rates, defect rates) over the lines as ``evaluate()``
lays them out, MLflow's ``compute_aggregated_metrics`` (the scorer's ``aggregations``, mean by default).
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from llmops_ci.engines.runner_main import answer

TOKEN_SUFFIXES = {"_prompt_tokens": "prompt", "_completion_tokens": "completion", "_total_tokens": "total"}


def load(req: dict[str, Any]) -> Any:
    """The evaluator (an instance, or a function) or the scorer, made as the library documents it."""
    for root in reversed(req.get("roots") or []):
        sys.path.insert(0, root)
    module, _, attr = str(req["ref"]).partition(":")
    obj = getattr(importlib.import_module(module), attr)
    init = dict(req.get("init") or {})
    if req.get("scorer"):
        from mlflow.genai.scorers import Scorer

        if isinstance(obj, Scorer):
            if init:
                raise TypeError(f"{req['ref']} is a scorer instance already; it takes no init:")
            return obj
        if isinstance(obj, type) and issubclass(obj, Scorer):
            return obj(**init)
        raise TypeError(f"{req['ref']} is not an MLflow scorer: decorate the function with "
                        "@mlflow.genai.scorers.scorer, or name a Scorer class or instance")
    if isinstance(obj, type):
        return obj(**init)
    if init:
        raise TypeError(f"{req['ref']} is a function; init: is for an evaluator class")
    return obj


def _scorer_kwargs(inputs: dict[str, Any]) -> dict[str, Any]:
    """A mapped line as a scorer's arguments: ``expectations`` must be a dict (a bare value is the expected
    response, as MLflow's ``expected_response``)."""
    out = dict(inputs)
    if "expectations" in out and not isinstance(out["expectations"], dict):
        out["expectations"] = {"expected_response": out["expectations"]}
    return out


def feedbacks(scorer: Any, value: Any) -> list[Any]:
    """A scorer's return value as MLflow's Feedback objects, named as MLflow names them."""
    from mlflow.entities.assessment import Feedback

    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, Feedback):
            if not item.name or item.name == "feedback":  # unnamed: the scorer's name, as mlflow.genai.evaluate does
                item.name = scorer.name
            out.append(item)
        else:
            out.append(Feedback(name=scorer.name, value=item))
    return out


def _cast(value: Any) -> Any:
    """A feedback value as a number where MLflow would aggregate it (yes/no -> 1/0), else as it is."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return value
    text = str(getattr(value, "value", value)).lower() if value is not None else None
    if text in ("yes", "no"):
        return 1.0 if text == "yes" else 0.0
    return value


def score_line(evaluator: Any, req: dict[str, Any], inputs: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """(outputs, feedbacks) of one line; feedbacks only for a scorer."""
    if req.get("scorer"):
        found = feedbacks(evaluator, evaluator(**_scorer_kwargs(inputs)))
        errors = [f.error for f in found if getattr(f, "error", None) is not None]
        if errors:
            raise RuntimeError(getattr(errors[0], "error_message", None) or str(errors[0]))
        outputs: dict[str, Any] = {}
        for f in found:
            outputs[f.name] = _cast(f.value)
            if isinstance(f.value, str) or hasattr(f.value, "value"):
                outputs[f"{f.name}_label"] = str(getattr(f.value, "value", f.value))
            if f.rationale:
                outputs[f"{f.name}_rationale"] = f.rationale
        return outputs, found
    result = evaluator(**inputs)
    return (dict(result) if isinstance(result, dict) else {"value": result}), []


def tokens_of(outputs: dict[str, Any]) -> dict[str, int]:
    """An LLM-judged evaluator's token counts, which azure-ai-evaluation reports among the outputs."""
    out: dict[str, int] = {}
    for key, value in outputs.items():
        if key.endswith("_properties") and isinstance(value, dict):  # 1.18: the judge call's usage is in here
            for sub, name in (("prompt_tokens", "prompt"), ("completion_tokens", "completion"),
                              ("total_tokens", "total")):
                if isinstance(value.get(sub), int) and not isinstance(value.get(sub), bool):
                    out[name] = out.get(name, 0) + value[sub]
        for suffix, name in TOKEN_SUFFIXES.items():
            if key.endswith(suffix) and isinstance(value, int) and not isinstance(value, bool):
                out[name] = out.get(name, 0) + value
    return out


def aggregate(req: dict[str, Any], evaluator: Any, records: list[dict[str, Any]],
              found: dict[int, list[Any]]) -> dict[str, Any]:
    done = [r for r in records if r["status"] == "Completed"]
    if not done:
        return {}
    if req.get("scorer"):
        from mlflow.genai.scorers.aggregation import compute_aggregated_metrics

        results = [SimpleNamespace(assessments=found[r["line"]]) for r in done]
        metrics = compute_aggregated_metrics(results, [evaluator])  # type: ignore[arg-type]
    else:
        import pandas as pd  # type: ignore[import-untyped]
        from azure.ai.evaluation._evaluate._evaluate import _aggregate_metrics

        name = str(req["name"])
        frame = pd.DataFrame([{f"outputs.{name}.{k}": v for k, v in r["outputs"].items()} for r in done])
        metrics = {k.removeprefix(f"{name}."): v for k, v in _aggregate_metrics(frame, {name: evaluator}).items()}
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def run(req: dict[str, Any]) -> dict[str, Any]:
    evaluator = load(req)
    progress = Path(req["progress"])
    lock = threading.Lock()
    records: dict[int, dict[str, Any]] = {}
    found: dict[int, list[Any]] = {}
    timeout = float(req.get("line_timeout") or 300)

    def one(number: int, inputs: dict[str, Any]) -> None:
        started = time.monotonic()
        record: dict[str, Any] = {"line": number, "inputs": inputs}
        try:
            outputs, feedback = score_line(evaluator, req, inputs)
            record.update(status="Completed", outputs=outputs, error=None, tokens=tokens_of(outputs))
            found[number] = feedback
        except Exception as exc:  # one line's failure is that line's, as in a batch run
            record.update(status="Failed", outputs=None, error=f"{type(exc).__name__}: {exc}",
                          error_code=type(exc).__name__, tokens={})
        record["duration_s"] = time.monotonic() - started
        with lock:
            if number in records:
                return
            records[number] = record
            with progress.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, default=str) + "\n")

    lines = [(int(n), dict(inputs)) for n, inputs in req["lines"]]
    pool = ThreadPoolExecutor(max_workers=max(1, int(req.get("workers") or 1)))
    begun: dict[int, float] = {}

    def timed(number: int, inputs: dict[str, Any]) -> None:
        begun[number] = time.monotonic()
        one(number, inputs)

    futures = {pool.submit(timed, n, inputs): (n, inputs) for n, inputs in lines}
    pending = set(futures)
    while pending:
        _, pending = wait(pending, timeout=0.2)
        now = time.monotonic()
        for future in list(pending):  # a line past its time is failed and abandoned, as a batch run's
            n, inputs = futures[future]
            if n in begun and now - begun[n] > timeout:
                pending.discard(future)
                with lock:
                    records.setdefault(n, {"line": n, "inputs": inputs, "status": "Failed", "outputs": None,
                                           "tokens": {}, "error": f"Line {n} execution timeout for exceeding "
                                           f"{int(timeout)} seconds (abandoned)",
                                           "error_code": "LineExecutionTimeoutError", "duration_s": now - begun[n]})
    pool.shutdown(wait=False, cancel_futures=True)
    ordered = [records[n] for n, _ in lines]
    return {"status": "Completed", "lines": ordered, "metrics": aggregate(req, evaluator, ordered, found)}


if __name__ == "__main__":
    # everything goes back to the parent as a result; an abandoned line's thread must not keep the process
    answer(run, catch=BaseException)
