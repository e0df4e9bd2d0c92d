"""Child process that drives MLflow for an agent; the only module besides the release ones that imports mlflow.

It runs as ``python -m llmops_ci.engines.mlflow.runner`` with the environment ``mlflow_environment``
builds: a sqlite tracking store and registry under the state dir, telemetry and the model price
catalog lookup off. The request comes on stdin as JSON; the result is written as JSON to
``request["result"]``; a batch run also appends each finished line to ``request["lines"]`` so the
parent can show progress.

Actions: ``batch`` (predict once per data line: a list of requests would silently answer only the
first), ``log`` (log the model from code with its declared resources, optionally register it by
content hash and alias it), ``alias``, ``predict`` (load a logged model and predict each request).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from llmops_ci.engines.runner_main import answer

HASH_TAG = "llmops.content_hash"


def as_request(line: dict[str, Any], interface: str, mapping: dict[str, Any] | None = None) -> dict[str, Any]:
    """A data line as the agent's request: only the interface's fields (after ``column_mapping``, whose
    ``${data.col}`` values pick columns); a plain string becomes one user message."""
    field = "input" if interface == "responses" else "messages"
    if mapping:
        line = {k: line.get(v[7:-1]) if isinstance(v, str) and v.startswith("${data.") and v.endswith("}") else v
                for k, v in mapping.items()}
    request = {k: line[k] for k in (field, "custom_inputs", "context") if k in line}
    if isinstance(request.get(field), str):
        request[field] = [{"role": "user", "content": request[field]}]
    return request


def usage_tokens(response: Any) -> dict[str, int]:
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return {}
    prompt = usage.get("input_tokens", usage.get("prompt_tokens"))
    completion = usage.get("output_tokens", usage.get("completion_tokens"))
    out = {k: int(v) for k, v in (("prompt", prompt), ("completion", completion)) if isinstance(v, int)}
    total = usage.get("total_tokens")
    if isinstance(total, int) or out:
        out["total"] = int(total) if isinstance(total, int) else sum(out.values())
    return out


def output_text(response: Any, interface: str) -> str | None:
    """The agent's final text, what an evaluation reads as ``${run.outputs.output_text}``: for a ResponsesAgent
    the ``output_text`` parts of its message items joined, as OpenAI's ``Response.output_text`` does; for a
    ChatAgent the content of its last assistant message. None when it answered no text (only tool calls)."""
    if not isinstance(response, dict):
        return None
    if interface == "responses":
        texts = [part.get("text") for item in response.get("output") or [] if isinstance(item, dict)
                 and item.get("type") == "message" for part in item.get("content") or []
                 if isinstance(part, dict) and part.get("type") == "output_text"]
        found = [t for t in texts if isinstance(t, str)]
        return "".join(found) if found else None
    for message in reversed(response.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "assistant" and isinstance(message.get("content"), str):
            return str(message["content"])
    return None


def agent_outputs(response: Any, interface: str) -> dict[str, Any]:
    """A line's outputs: the response's own fields (``output`` or ``messages``, ``custom_outputs``) plus
    ``output_text``; ``usage`` is the line's tokens, not an output."""
    fields = dict(response) if isinstance(response, dict) else {"output": response}
    fields.pop("usage", None)
    return {"output_text": output_text(response, interface), **fields}


def _wrapper(req: dict[str, Any]) -> Any:
    """The agent loaded from its code, behind the same dict-in/dict-out wrapper serving uses."""
    from mlflow.models.utils import _load_model_code_path
    from mlflow.pyfunc.model import PythonModelContext

    code = Path(req["code"])
    sys.path.insert(0, str(code.parent))
    os.chdir(code.parent)
    agent = _load_model_code_path(str(code), req.get("model_config"))
    if req["interface"] == "responses":
        from mlflow.pyfunc.loaders.responses_agent import _ResponsesAgentPyfuncWrapper

        return _ResponsesAgentPyfuncWrapper(agent, PythonModelContext({}, req.get("model_config")))
    from mlflow.pyfunc.loaders.chat_agent import _ChatAgentPyfuncWrapper

    return _ChatAgentPyfuncWrapper(agent)


def _batch(req: dict[str, Any]) -> dict[str, Any]:
    model = _wrapper(req)
    lines = [json.loads(raw) for raw in Path(req["data"]).read_text(encoding="utf-8").splitlines() if raw.strip()]
    workers, timeout = max(1, int(req.get("workers") or 1)), float(req.get("line_timeout") or 300)
    lock = threading.Lock()
    progress = Path(req["lines"])
    records: list[dict[str, Any] | None] = [None] * len(lines)

    def finish(index: int, record: dict[str, Any]) -> None:
        with lock:
            if records[index] is not None:  # timed out already; a late answer is dropped
                return
            records[index] = record
            with progress.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, default=str) + "\n")

    def one(index: int, request: dict[str, Any]) -> None:
        started = time.monotonic()
        record: dict[str, Any] = {"line": index, "inputs": request}
        try:
            response = model.predict(request)
            record.update(status="Completed", outputs=agent_outputs(response, req["interface"]), error=None,
                          error_code=None,
                          tokens=usage_tokens(response))
        except Exception as exc:  # one line's failure is that line's result
            cause = exc.__cause__ or exc
            record.update(status="Failed", outputs=None, error=f"{type(exc).__name__}: {exc}",
                          error_code=type(cause).__name__, tokens={})
        record["duration_s"] = round(time.monotonic() - started, 3)
        finish(index, record)

    # a thread per line, at most `workers` at once; a line past its timeout fails and its thread is
    # abandoned (os._exit ends it), so one hung call cannot hold a worker for the rest of the run
    queue = [(i, as_request(line, req["interface"], req.get("column_mapping"))) for i, line in enumerate(lines)]
    queue.reverse()
    running: dict[int, tuple[threading.Thread, float, dict[str, Any]]] = {}
    while queue or running:
        while queue and len(running) < workers:
            index, request = queue.pop()
            thread = threading.Thread(target=one, args=(index, request), daemon=True)
            running[index] = (thread, time.monotonic(), request)
            thread.start()
        time.sleep(0.02)
        for index, (thread, started, request) in list(running.items()):
            if not thread.is_alive():
                del running[index]
            elif time.monotonic() - started > timeout:
                del running[index]
                finish(index, {"line": index, "inputs": request, "status": "Failed", "outputs": None, "tokens": {},
                               "error": f"TimeoutError: the line took more than {timeout:.0f} s (--line-timeout)",
                               "error_code": "TimeoutError", "duration_s": round(time.monotonic() - started, 3)})
    return {"status": "Completed", "lines": records}


def _resources(req: dict[str, Any]) -> list[Any]:
    from mlflow.models import resources as mr

    return [getattr(mr, cls)(**{arg: name}, **({"on_behalf_of_user": True} if obo else {}))
            for cls, arg, name, obo in req.get("resources") or []]


def _experiment(req: dict[str, Any]) -> None:
    import mlflow

    name = req.get("experiment") or "llmops-ci"
    if mlflow.get_experiment_by_name(name) is None:
        # a workspace (Databricks) keeps the artifacts where it decides; locally they stay under the state dir
        location = Path(req["artifacts"]).as_uri() if req.get("artifacts") else None
        mlflow.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(name)


def _log(req: dict[str, Any]) -> dict[str, Any]:
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    name, content = req.get("register_name"), req.get("content_hash")
    if name and content:
        for found in _versions(client, name, content, req.get("content_alias")):
            _set_alias(client, name, str(found.version), req.get("content_alias") or content_alias(content))
            _set_alias(client, name, str(found.version), req.get("alias"))
            return {"status": "Completed", "name": name, "version": str(found.version), "created": False,
                    "model_uri": f"models:/{name}/{found.version}", "run_id": found.run_id}
    _experiment(req)
    resources = _resources(req)
    policy = None
    if req.get("auth_policy") is not None:
        from mlflow.models.auth_policy import AuthPolicy, SystemAuthPolicy, UserAuthPolicy

        policy = AuthPolicy(user_auth_policy=UserAuthPolicy(api_scopes=req["auth_policy"]["api_scopes"]),
                            system_auth_policy=SystemAuthPolicy(resources=resources))
    code = Path(req["code"])
    os.chdir(code.parent)
    sys.path.insert(0, str(code.parent))
    with mlflow.start_run(run_name=req.get("run_name")) as run:
        mlflow.set_tags(req.get("tags") or {})
        info = mlflow.pyfunc.log_model(
            name="agent", python_model=str(code), pip_requirements=req["pip_requirements"],
            resources=None if policy is not None else resources, auth_policy=policy,
            input_example=req.get("input_example"), model_config=req.get("model_config"),
            code_paths=req.get("code_paths") or None)
    out: dict[str, Any] = {"status": "Completed", "model_uri": info.model_uri, "run_id": run.info.run_id,
                           "created": True}
    if name:
        version = mlflow.register_model(info.model_uri, name, tags={HASH_TAG: content} if content else None)
        for key, value in (req.get("version_tags") or {}).items():
            client.set_model_version_tag(name, str(version.version), key, str(value))
        if content:
            _set_alias(client, name, str(version.version), req.get("content_alias") or content_alias(content))
        _set_alias(client, name, str(version.version), req.get("alias"))
        out.update(name=name, version=str(version.version), model_uri=f"models:/{name}/{version.version}")
    return out


def _set_alias(client: Any, name: str, version: str, alias: str | None) -> None:
    if alias:
        client.set_registered_model_alias(name, alias, version)


def content_alias(content: str) -> str:
    """The alias that names the version holding this content: Unity Catalog's search returns no tags
    (MLflow's ``model_version_search_from_uc_proto`` drops them), but an alias is one GET away."""
    return f"llmops_{content}"


def _versions(client: Any, name: str, content: str, alias: str | None = None, scan: int = 50) -> list[Any]:
    """The version holding this content hash: by its content alias; versions registered before aliases
    were set are found by reading each of the newest ``scan`` versions (a get carries tags, a search not)."""
    from mlflow.exceptions import MlflowException

    try:
        return [client.get_model_version_by_alias(name, alias or content_alias(content))]
    except MlflowException:
        pass  # no such alias, or no such model yet
    try:
        numbers = sorted((int(v.version) for v in client.search_model_versions(f"name = '{name}'")), reverse=True)
    except MlflowException:
        return []
    for number in numbers[:scan]:
        version = client.get_model_version(name, str(number))
        tags = version.tags if isinstance(version.tags, dict) else {}
        if tags.get(HASH_TAG) == content:
            return [version]
    return []


def _find(req: dict[str, Any]) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    found = _versions(MlflowClient(), req["name"], req["content_hash"], req.get("content_alias"))
    return {"status": "Completed", "version": str(found[0].version) if found else None}


def _alias(req: dict[str, Any]) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    _set_alias(client, req["name"], str(req["version"]), req["alias"])
    aliases = client.get_registered_model(req["name"]).aliases
    return {"status": "Completed", "aliases": {k: str(v) for k, v in aliases.items()}}


def _predict(req: dict[str, Any]) -> dict[str, Any]:
    import mlflow

    model = mlflow.pyfunc.load_model(req["model_uri"])
    return {"status": "Completed", "outputs": [model.predict(r) for r in req["requests"]]}


ACTIONS = {"batch": _batch, "log": _log, "find": _find, "alias": _alias, "predict": _predict}


if __name__ == "__main__":
    answer(lambda req: ACTIONS[req["action"]](req))  # no teardown after: MLflow's async loggers and thread pools
