"""What the warm executor makes of prompt flow's lines: inputs read as prompt flow reads them, line records,
aggregation over the completed lines. No process handling here (that is ``pf_worker``); promptflow is
imported only inside the functions, in the executor's processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmops_ci.engines.data_rows import plain_jsonl


def inputs_processor(base: type) -> type:
    """prompt flow's own input processor, reading plain JSON Lines without pandas (its import is ~0.7 s of
    every step) when that gives exactly what pandas gives; anything else goes to prompt flow's loader."""

    class Inputs(base):
        def _resolve_data_from_input_path(self, input_path: Path) -> list[dict[str, Any]]:
            rows = plain_jsonl(Path(input_path))
            if rows is None:
                return list(super()._resolve_data_from_input_path(input_path))
            return list(self._multimedia_processor.resolve_multimedia_data_recursively(Path(input_path).parent, rows))

    return Inputs


def status_of(status: Any) -> str:
    return str(getattr(status, "value", status))


def outputs_of(output: Any) -> Any:
    if isinstance(output, dict):
        return {k: v for k, v in output.items() if k != "line_number"}
    return output


def line_record(index: int, result: Any) -> dict[str, Any]:
    info = result.run_info
    metrics = info.system_metrics or {}
    error: dict[str, Any] = info.error or {}
    duration = metrics.get("duration")
    if not isinstance(duration, (int, float)) and info.start_time and info.end_time:
        duration = (info.end_time - info.start_time).total_seconds()
    failing = None
    if error:
        # the first failing node is the cause; later ones are usually Canceled by it
        for name, node in (result.node_run_infos or {}).items():
            status = status_of(node.status)
            if status == "Failed" or (status == "Canceled" and failing is None):
                failing = name
                if status == "Failed":
                    break
    inner: dict[str, Any] = error["innerError"] if isinstance(error.get("innerError"), dict) else {}
    return {"line": index, "status": status_of(info.status),
            "inputs": {k: v for k, v in (info.inputs or {}).items() if k != "line_number"},
            "outputs": outputs_of(info.output), "duration_s": duration,
            "tokens": {k: int(metrics.get(f"{k}_tokens") or 0) for k in ("prompt", "completion", "total")},
            "error": error.get("message"), "error_code": inner.get("code") or error.get("code"), "node": failing,
            # the exception chain as prompt flow records it: the parent tells an outside-service failure from it
            "error_detail": plain(error) if error else None}


def failed_record(index: int, inputs: dict[str, Any], message: str, code: str) -> dict[str, Any]:
    return {"line": index, "status": "Failed", "inputs": {k: v for k, v in inputs.items() if k != "line_number"},
            "outputs": None, "duration_s": None, "tokens": {"prompt": 0, "completion": 0, "total": 0},
            "error": message, "error_code": code, "node": None}


def is_user_error(exc: BaseException) -> bool:
    return any(cls.__name__ in ("UserErrorException", "ValidationException", "InvalidFlowError")
               for cls in type(exc).__mro__)


def aggregate(executor: Any, inputs: list[dict[str, Any]], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The aggregation nodes over the lines that completed, exactly as prompt flow's batch engine feeds them."""
    from promptflow._utils.execution_utils import (
        apply_default_value_for_input,
        collect_lines,
        get_aggregation_inputs_properties,
    )
    from promptflow._utils.utils import transpose
    from promptflow.executor._result import LineResult
    from promptflow.executor._script_executor import ScriptExecutor
    from promptflow.executor.flow_validator import FlowValidator

    if not executor.has_aggregation_node:
        return {}
    done = [r["result"] for r in results if isinstance(r["result"], LineResult)
            and r["record"]["status"] == "Completed"]
    if isinstance(executor, ScriptExecutor):
        from promptflow.contracts.types import AttrDict

        outputs = [AttrDict(r.output) if isinstance(r.output, dict) else r.output for r in done]
        return dict(executor.exec_aggregation(None, outputs).metrics or {})
    flow = executor._flow
    by_line = {int(i["line_number"]): i for i in inputs}
    line_inputs = [FlowValidator.ensure_flow_inputs_type(
        flow=flow, inputs=apply_default_value_for_input(flow.inputs, by_line[r.run_info.index])) for r in done]
    keys = get_aggregation_inputs_properties(flow)
    aggregation_inputs = collect_lines(list(range(len(done))),
                                       transpose([r.aggregation_inputs for r in done], keys=keys))
    result = executor.exec_aggregation(transpose(line_inputs, keys=list(flow.inputs.keys())), aggregation_inputs)
    return dict(result.metrics or {})


def plain(value: Any) -> Any:
    """``value`` as JSON can carry it (an error record may hold exception objects)."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return None
