"""Child process that drives prompt flow's ``PFClient``; the only module that imports promptflow.

It runs as ``python -m llmops_ci.engines.promptflow.runner`` inside the private home that
``pf_home.PFHome`` prepared (environment set by the parent). ``pf.run`` spawns a process
manager that re-imports ``__main__``; this module's guard keeps that import inert. The request
comes on stdin as JSON (connection secrets never touch a request file); the result is written as
JSON to ``request["result"]``. Connections are deleted from the private store before exiting.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any


def make_connection(spec: dict[str, Any]) -> Any:
    from promptflow.connections import AzureOpenAIConnection, CustomConnection, OpenAIConnection

    values = dict(spec["values"])
    if spec["type"] == "open_ai":
        return OpenAIConnection(name=spec["name"], **values)
    if spec["type"] == "azure_open_ai":
        values.setdefault("api_type", "azure")
        return AzureOpenAIConnection(name=spec["name"], **values)
    return CustomConnection(name=spec["name"], configs=values.get("configs") or {},
                            secrets=values.get("secrets") or {})


def _run(pf: Any, req: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "flow": req["flow"], "data": req["data"], "name": req["name"], "stream": False,
        "column_mapping": req.get("column_mapping") or None, "variant": req.get("variant"),
        "connections": req.get("connections") or None,
        "environment_variables": req.get("environment_variables") or None,
        "worker_count": req["worker_count"], "line_timeout_sec": req["line_timeout_sec"],
    }
    if req.get("run"):
        kwargs["run"] = req["run"]
    elif req.get("base"):
        kwargs["data"], kwargs["column_mapping"] = _over_base(req)
    run = pf.run(**{k: v for k, v in kwargs.items() if v is not None})
    error = None
    if run.status != "Completed":
        error = (run._to_dict().get("error") or {}).get("message") or f"run ended {run.status}"
    return {"status": run.status, "output_path": run.properties.get("output_path"), "error": error,
            "system_metrics": run.properties.get("system_metrics") or {}}


def _over_base(req: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A run over a base run that pf.run cannot see (the warm executor made it): its data, outputs and inputs
    merged by line as pf.run merges them, the mapping pointed at the merged columns."""
    from promptflow.batch._batch_inputs_processor import BatchInputsProcessor

    dirs = {"data": req["data"], "run.outputs": req["base"]["outputs"], "run.inputs": req["base"]["data"]}
    processor = BatchInputsProcessor(Path(req["flow"]).parent, {})
    merged = processor._merge_input_dicts_by_line(processor._resolve_input_data(dirs))
    path = Path(req["result"]).with_suffix(".data.jsonl")
    with path.open("w", encoding="utf-8") as fh:
        for row in merged:
            flat = {**row["data"], "line_number": row["line_number"]}
            for source in ("run.outputs", "run.inputs"):
                flat.update({f"{source}.{k}": v for k, v in row[source].items() if k != "line_number"})
            fh.write(json.dumps(flat, default=str) + "\n")
    mapping = {k: v.replace("${run.", "${data.run.") if isinstance(v, str) else v
               for k, v in (req.get("column_mapping") or {}).items()}
    return str(path), mapping


def _test(pf: Any, req: dict[str, Any]) -> dict[str, Any]:
    result = pf.flows._test(flow=req["flow"], inputs=req.get("inputs") or {}, variant=req.get("variant"),
                            environment_variables=req.get("environment_variables") or None,
                            stream_log=False, stream_output=False, allow_generator_output=False,
                            output_path=Path(req["output_path"]))
    info = result.run_info
    nodes = []
    for name, node in (result.node_run_infos or {}).items():
        metrics = node.system_metrics or {}
        nodes.append({"node": name, "status": str(getattr(node.status, "value", node.status)),
                      "duration_s": metrics.get("duration"), "tokens": metrics.get("total_tokens"),
                      "error": (node.error or {}).get("message")})
    return {"status": str(getattr(info.status, "value", info.status)), "output": result.output,
            "error": (info.error or {}).get("message"), "nodes": nodes,
            "system_metrics": info.system_metrics or {}}


def main() -> int:
    req = json.loads(sys.stdin.read())
    result_path = Path(req["result"])
    from promptflow.client import PFClient

    pf = PFClient()
    created: list[str] = []

    def stop(signum: int, frame: Any) -> None:
        # secrets must not outlive the run in the store, even when the run is cut short (Ctrl-C, a CI cancel)
        for name in created:
            try:
                pf.connections.delete(name)
            except Exception:
                continue
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        for spec in req.get("provider_connections", []):
            pf.connections.create_or_update(make_connection(spec))
            created.append(spec["name"])
        outcome = _test(pf, req) if req["action"] == "test" else _run(pf, req)
    except Exception as exc:  # reported to the parent, which decides the exit code
        outcome = {"status": "Failed", "error": f"{type(exc).__name__}: {exc}", "user_error": _is_user_error(exc),
                   "traceback": traceback.format_exc()}
    finally:
        for name in created:
            # secrets must not outlive the run in the store (the state dir may become a CI artifact)
            pf.connections.delete(name)
    result_path.write_text(json.dumps(outcome, default=str), encoding="utf-8")
    return 0


def _is_user_error(exc: BaseException) -> bool:
    return any(cls.__name__ in ("UserErrorException", "ValidationException", "InvalidFlowError")
               for cls in type(exc).__mro__)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The result is written and the store closed; skipping interpreter teardown (prompt flow's thread
    # pools and atexit hooks) saves most of a second per run.
    os._exit(code)
