"""A fake Azure ML workspace on 127.0.0.1 for prompt flow runs: what promptflow-azure's ``PFClient`` and the
``MLClient`` under it send when ``pfazure run create``/``stream``/``show-details``/``show-metrics``/``cancel``
run, answered over real HTTP.

- ARM (``https://management.azure.com``): the ``MLClient`` gets ``ArmToLoopback``, an azure-core
  ``RequestsTransport`` that sends those requests here instead; the workspace, default datastore,
  computes and connections.
- The prompt flow service (PFS, ``/flow/api/...``), run history (``/history/v1.0/...``) and metrics
  (``/metric/v2.0/...``): reached directly, because the workspace's ``discoveryUrl`` points here.

Runs advance one status per status check; each line's result comes from ``answer(run, line, inputs)``.
The one call not answered here is the blob upload itself (azure-storage-blob to
``<account>.blob.core.windows.net``, a host a loopback server cannot be): ``upload_stub`` replaces
``BlobStorageClient.upload`` and records what would be uploaded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport

SUB, GROUP, WS = "00000000-0000-0000-0000-000000000001", "rg-llmops", "ws-llmops"
WS_PATH = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.MachineLearningServices/workspaces/{WS}"
ARM = "https://management.azure.com"
PREFIXES = (("arm", ""), ("pfs", "/flow/api"), ("history", "/history/v1.0"), ("metric", "/metric/v2.0"))
STATUSES = ("NotStarted", "Preparing", "Running", "Running")  # then Completed (or the run's final status)

Answer = Callable[["FakeRun", int, dict[str, Any]], tuple[str, Any, str | None]]


class FakeCredential:
    """A token shaped like Entra ID's (promptflow-azure decodes it for the user and its expiry)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        exp = int(time.time()) + 3600
        audience = scopes[0].removesuffix("/.default") if scopes else ""
        token = jwt.encode({"oid": "11111111-1111-1111-1111-111111111111", "tid": "tenant", "upn": "ci@example.com",
                            "aud": audience, "exp": exp}, "not-a-secret-key-for-the-fake-token!", algorithm="HS256")
        return AccessToken(token, exp)


class ArmToLoopback(RequestsTransport):
    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base

    def send(self, request: Any, **kwargs: Any) -> Any:
        if request.url.startswith(ARM):
            request.url = self.base + request.url[len(ARM):]
        return super().send(request, **kwargs)


@dataclass
class FakeRun:
    name: str
    body: dict[str, Any]
    rows: list[dict[str, Any]]
    final: str = "Completed"
    polls: int = 0
    canceled: bool = False
    lines: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=lambda: ["Submitting flow run"])

    clock: Callable[[], float] | None = None  # with a clock, the run takes service_s from submission to end
    submitted: float = 0.0
    service_s: float = 0.0

    @property
    def status(self) -> str:
        if self.canceled:
            return "Canceled"
        if self.clock is not None:
            elapsed = self.clock() - self.submitted
            return "NotStarted" if elapsed <= 0 else "Running" if elapsed < self.service_s else self.final
        return STATUSES[self.polls] if self.polls < len(STATUSES) else self.final

    def finished_lines(self) -> int:
        if self.clock is None or not self.service_s:
            return len(self.rows) * max(self.polls - 1, 0) // len(STATUSES)
        return min(len(self.rows), int(len(self.rows) * (self.clock() - self.submitted) / self.service_s))


def _mapped(mapping: dict[str, str], row: dict[str, Any], base: FakeRun | None, index: int) -> dict[str, Any]:
    """Column mapping applied as the service does: ``${data.x}``, ``${run.outputs.x}``, ``${run.inputs.x}``."""
    if not mapping:
        return dict(row)
    out: dict[str, Any] = {}
    for key, ref in mapping.items():
        m = re.fullmatch(r"\$\{(data|run\.outputs|run\.inputs)\.([^}]+)\}", str(ref))
        if not m:
            out[key] = ref
        elif m[1] == "data":
            out[key] = row.get(m[2])
        else:
            line = base.lines[index] if base and index < len(base.lines) else {}
            source = line.get("output") if m[1] == "run.outputs" else line.get("inputs")
            out[key] = (source or {}).get(m[2])
    return out


class FakeWorkspace:
    def __init__(self, answer: Answer | None = None) -> None:
        self.answer: Answer = answer or (lambda run, i, inputs: ("Completed", {"answer": "ok"}, None))
        self.metrics: Callable[[FakeRun], dict[str, float]] = lambda run: {}
        self.computes: set[str] = set()
        self.identities: dict[str, str] = {}  # user-assigned identity resource id -> its client id
        self.connections: set[str] = set()
        self.runs: dict[str, FakeRun] = {}
        self.uploads: dict[str, Path] = {}  # remote path -> local source
        self.uploaded_files: dict[str, list[str]] = {}  # remote path -> files
        # (method, short path regex) -> statuses answered, one per matching request, before answering normally;
        # 0 answers that request normally
        self.fail: dict[tuple[str, str], list[int]] = {}
        self.final: dict[str, str] = {}  # label -> final status
        self.clock: Callable[[], float] | None = None  # virtual time for simulations (see bench/)
        self.service_s: Callable[[FakeRun], float] = lambda run: 0.0
        self.log: list[tuple[str, str]] = []
        self.bodies: list[Any] = []
        self.hang_on: str | None = None  # a short path regex that never answers
        self.interrupt_on: str | None = None  # a short path regex during which the test process gets SIGINT
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeWorkspace:
        self.thread.start()
        return self

    def __exit__(self, *args: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # what tests look at
    def calls(self, *kinds: str) -> list[tuple[str, str]]:
        return [c for c in self.log if not kinds or c[1].split(":", 1)[0] in kinds]

    def transport(self) -> ArmToLoopback:
        return ArmToLoopback(self.base)

    # --------------------------------------------------------------------------------------- HTTP
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw.strip() else None
                status, out = fake.handle(self.command, self.path.split("?")[0], self.path, body,
                                          self.headers.get("Authorization", ""))
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-ms-request-id", "fake")
                if status in (429, 503):
                    self.send_header("retry-after-ms", "1")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler

    def short(self, path: str) -> str:
        for kind, prefix in reversed(PREFIXES):
            if path.startswith(prefix + WS_PATH):
                return f"{kind}:{path[len(prefix + WS_PATH):]}"
        return f"other:{path}"

    def handle(self, method: str, path: str, full: str, body: Any, auth: str) -> tuple[int, Any]:
        short = self.short(path)
        with self.lock:
            self.log.append((method, short))
            self.bodies.append(body)
            for (m, pattern), statuses in self.fail.items():
                if m == method and re.fullmatch(pattern, short) and statuses:
                    code = statuses.pop(0)
                    if not code:
                        break
                    return code, {"error": {"code": {401: "AuthenticationFailed", 403: "AuthorizationFailed",
                                                     429: "TooManyRequests"}.get(code, "ServiceError"),
                                            "message": f"fake {code} for {method} {short}"}}
        if self.interrupt_on and re.fullmatch(self.interrupt_on, short):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while this request is on its way
            time.sleep(0.5)
        if self.hang_on and re.fullmatch(self.hang_on, short):
            time.sleep(30)
        if not auth.startswith("Bearer "):
            return 401, {"error": {"code": "AuthenticationFailed", "message": "no bearer token"}}
        kind, rest = short.split(":", 1)
        with self.lock:
            return getattr(self, f"_{kind}")(method, rest, full, body)

    # --------------------------------------------------------------------------------------- ARM
    def _arm(self, method: str, rest: str, full: str, body: Any) -> tuple[int, Any]:
        arm_id = WS_PATH
        if rest == "":
            # ARM Workspace: identity is a ManagedServiceIdentity (userAssignedIdentities: id -> principal/client)
            identity: dict[str, Any] = {"type": "SystemAssigned"}
            if self.identities:
                identity = {"type": "SystemAssigned,UserAssigned", "userAssignedIdentities": {
                    rid: {"principalId": f"p-{cid}", "clientId": cid} for rid, cid in self.identities.items()}}
            primary = {"primaryUserAssignedIdentity": next(iter(self.identities))} if self.identities else {}
            return 200, {"id": arm_id, "name": WS, "location": "eastus", "kind": "Default", "identity": identity,
                         "properties": {**primary, "discoveryUrl": f"{self.base}/discovery", "workspaceId": "ws-guid-1",
                                        "mlFlowTrackingUri": "azureml://eastus.api.azureml.ms/mlflow/v1.0" + arm_id}}
        if rest == "/datastores" or rest == "/datastores/workspaceblobstore":
            store = {"id": arm_id + "/datastores/workspaceblobstore", "name": "workspaceblobstore",
                     "properties": {"datastoreType": "AzureBlob", "accountName": "fakestorage",
                                    "containerName": "azureml-blobstore-1", "endpoint": "core.windows.net",
                                    "protocol": "https", "isDefault": True, "credentials": {"credentialsType": "None"}}}
            return 200, ({"value": [store]} if rest == "/datastores" else store)
        if m := re.fullmatch(r"/computes/([^/]+)", rest):
            if m[1] not in self.computes:
                return 404, {"error": {"code": "ResourceNotFound", "message": f"compute {m[1]} not found"}}
            return 200, {"id": arm_id + rest, "name": m[1], "location": "eastus",
                         "properties": {"computeType": "AmlCompute", "properties": {"vmSize": "STANDARD_D4AS_V4"}}}
        if m := re.fullmatch(r"/connections/([^/]+)", rest):
            if m[1] not in self.connections:
                return 404, {"error": {"code": "ResourceNotFound", "message": f"connection {m[1]} not found"}}
            return 200, {"id": arm_id + rest, "name": m[1],
                         "properties": {"authType": "ApiKey", "category": "AzureOpenAI", "target": "https://x",
                                        "metadata": {}}}
        return 400, {"error": {"code": "Unexpected", "message": f"the fake does not know ARM {method} {rest}"}}

    # --------------------------------------------------------------------------------------- PFS
    def _pfs(self, method: str, rest: str, full: str, body: Any) -> tuple[int, Any]:
        if rest == "/TraceSessions" and method == "GET":
            return 200, {"traceCosmosConfiguration": "Disabled", "traceCosmosStatus": "NotExists"}
        if rest == "/BulkRuns/submit" and method == "POST":
            return 200, self.submit(body)
        if m := re.fullmatch(r"/BulkRuns/([^/]+)", rest):
            if m[1] not in self.runs:
                return 404, {"error": {"code": "NotFound", "message": f"run {m[1]} not found"}}
            return 200, {"flowRunId": m[1], "studioPortalEndpoint": self.portal(m[1]),
                         "studioPortalTraceEndpoint": self.portal(m[1])}
        if m := re.fullmatch(r"/BulkRuns/([^/]+)/logContent", rest):
            return 200, self.log_text(self.runs[m[1]])
        if m := re.fullmatch(r"/BulkRuns/([^/]+)/childRuns", rest):
            start = int(re.search(r"startIndex=(\d+)", full)[1])  # type: ignore[index]
            end = int(re.search(r"endIndex=(\d+)", full)[1])  # type: ignore[index]
            return 200, self.runs[m[1]].lines[start:end + 1]
        if m := re.fullmatch(r"/BulkRuns/([^/]+)/cancel", rest):
            self.runs[m[1]].canceled = True
            return 200, "canceled"
        return 400, {"error": {"code": "Unexpected", "message": f"the fake does not know PFS {method} {rest}"}}

    def portal(self, name: str) -> str:
        return f"https://ml.azure.com/prompts/flow/bulkrun/run/{name}/details?wsid={WS_PATH}"

    def submit(self, body: dict[str, Any]) -> str:
        name = body["runId"]
        data = body.get("batchDataInput", {}).get("dataUri")
        rows: list[dict[str, Any]] = []
        if data:
            source = self.uploads[data.split("/paths/", 1)[1].rstrip("/")]
            rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
        run = FakeRun(name, body, rows, self.final.get(body.get("runDisplayName", ""), "Completed"))
        if self.clock is not None:
            run.clock, run.submitted = self.clock, self.clock()
            run.service_s = self.service_s(run)
        self.runs[name] = run
        return name

    def log_text(self, run: FakeRun) -> str:
        return "".join(line + "\n" for line in run.log)

    def advance(self, run: FakeRun) -> None:
        """One status check: the run moves on one status, and its log grows (it is only ever appended to)."""
        before = run.status
        run.polls += 1
        if run.status == "Running":
            run.log.append(f"Finished {run.finished_lines()} / {len(run.rows)} lines.")
        elif run.status != before and run.status in ("Completed", "Failed"):
            run.log.append(f"Finished {len(run.rows)} / {len(run.rows)} lines.")
        if run.status == "Completed" and not run.lines:  # a Failed run (its session did not start) has none
            base = self.runs.get(run.body.get("variantRunId") or "")
            for i, row in enumerate(run.rows):
                inputs = _mapped(run.body.get("inputsMapping") or {}, row, base, i)
                status, output, error = self.answer(run, i, inputs)
                run.lines.append({
                    "run_id": f"{run.name}_{i}", "status": status, "index": i, "inputs": inputs, "output": output,
                    "error": {"message": error, "code": "UserError",
                              "innerError": {"code": "ToolExecutionError"}} if error else None,
                    "system_metrics": {"duration": 0.5 + i, "prompt_tokens": 10, "completion_tokens": 2,
                                       "total_tokens": 12},
                    "start_time": "2026-12-01T00:00:00Z", "end_time": "2026-12-01T00:00:01Z"})

    # --------------------------------------------------------------------------------------- run history
    def _history(self, method: str, rest: str, full: str, body: Any) -> tuple[int, Any]:
        if rest == "/rundata" and method == "POST":
            run = self.runs.get(body["runId"])
            if run is None:
                return 404, {"error": {"code": "NotFound", "message": f"run {body['runId']} not found"}}
            self.advance(run)
            failed = sum(1 for line in run.lines if line["status"] != "Completed")
            meta = {"runId": run.name, "runType": "azureml.promptflow.EvaluationRun" if run.body.get("variantRunId")
                    else "azureml.promptflow.FlowRun", "createdUtc": "2026-12-01T00:00:00Z", "status": run.status,
                    "displayName": run.body.get("runDisplayName"), "description": None, "tags": {},
                    "properties": {"azureml.promptflow.flow_name": "flow",
                                   "azureml.promptflow.input_data": run.body.get("batchDataInput", {}).get("dataUri"),
                                   "azureml.promptflow.input_run_id": run.body.get("variantRunId"),
                                   "__pf__.lines.failed": str(failed)},
                    "createdBy": {"userName": "ci"}, "outputs": None,
                    "error": {"error": {"message": "the compute session failed to start: pip install of "
                                                   "requirements.txt failed"}} if run.status == "Failed" else None}
            if run.status in ("Completed", "Failed", "Canceled"):
                meta.update(startTimeUtc="2026-12-01T00:00:00Z", endTimeUtc="2026-12-01T00:00:07Z", duration="7")
            return 200, {"runMetadata": meta}
        return 400, {"error": {"code": "Unexpected", "message": f"the fake does not know history {method} {rest}"}}

    def _metric(self, method: str, rest: str, full: str, body: Any) -> tuple[int, Any]:
        if m := re.fullmatch(r"/runs/([^/]+)/lastvalues", rest):
            run = self.runs[m[1]]
            values = {"__pf__.lines.completed": float(len(run.lines)), **self.metrics(run)}
            return 200, {"value": [{"name": k, "value": [{"data": {k: v}}]} for k, v in values.items()]}
        return 400, {"error": {"code": "Unexpected", "message": f"the fake does not know metric {method} {rest}"}}

    def _other(self, method: str, rest: str, full: str, body: Any) -> tuple[int, Any]:
        return 400, {"error": {"code": "Unexpected", "message": f"the fake does not know {method} {rest}"}}


def upload_stub(fake: FakeWorkspace) -> Callable[..., dict[str, str]]:
    """Stands in for azure-ai-ml's ``BlobStorageClient.upload`` (the azure-storage-blob call)."""

    def upload(client: Any, source: str, name: str, version: str, ignore_file: Any = None,
               asset_hash: str | None = None, show_progress: bool = True) -> dict[str, str]:
        src = Path(source)
        dest = f"LocalUpload/{asset_hash}/{src.name}"
        files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()) if src.is_dir() \
            else [src.name]
        client.uploaded_file_count = client.total_file_count = len(files)
        with fake.lock:
            fake.uploads[dest] = src
            fake.uploaded_files[dest] = files
        return {"remote path": dest, "name": name, "version": version, "indicator file": ""}

    return upload
