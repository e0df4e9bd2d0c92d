#!/usr/bin/env python3
"""How the wall time of ``batch-run --backend azureml`` grows with lines and flows when the runs are remote.

    python bench/azureml_runs_sim.py [--flows 1,2,4,8] [--lines 10,100,1000] [--startup 120] [--per-line 2]
                                     [--service-workers 16]

What it does, per (flows, lines):

1. Writes a project in a temporary folder with that many flows over a data set of that many lines.
2. Starts the fake Azure ML workspace of the tests (tests/fakes/azureml_runs.py, real HTTP on 127.0.0.1) on a
   virtual clock: a run takes ``startup + lines x per-line / service-workers`` seconds of service time (the
   compute session start, then the lines in parallel in the cloud). The service's time is a parameter: it
   cannot be measured here.
3. Runs ``llmops-ci batch-run --backend azureml`` in this process through the real PFClient/MLClient code.
   Its waits between status checks go to the virtual clock; everything else (imports, lint, snapshot, upload
   bookkeeping, every HTTP request of submission, status checks, details and metrics) is real and timed.
4. Prints, side by side:
   - llmops-ci: measured client time + virtual waiting (all flows submitted at once, awaited together,
     status checks backing off from 5 s to 30 s);
   - pfazure: ``pfazure run create --stream`` then ``show-details``/``show-metrics`` one flow after the
     other, as Microsoft's template pipelines do (simulated: its stream checks every 10 s; the same
     per-call client costs as measured for llmops-ci);
   - ideal: the longest single run's service time (everything in parallel, no client cost).

Nothing leaves the machine; the blob upload (azure-storage-blob) is replaced as in the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmops_ci.cli import main  # noqa: E402
from llmops_ci.runs import BACKENDS  # noqa: E402
from llmops_ci.runs.azureml import AzureMLRuns, Polling  # noqa: E402
from llmops_ci.runs.azureml_service import pf_client_class  # noqa: E402
from tests.fakes.azureml_runs import SUB, FakeCredential, FakeWorkspace, upload_stub  # noqa: E402

PFAZURE_STREAM_S = 10.0  # promptflow-azure's RunOperations.stream sleeps 10 s between checks

FLOW = """\
inputs:
  text: {type: string}
outputs:
  answer: {type: string, reference: '${echo.output}'}
nodes:
- name: echo
  type: python
  source: {type: code, path: echo.py}
  inputs: {text: '${inputs.text}'}
"""
ECHO = "from promptflow.core import tool\n\n\n@tool\ndef echo(text: str) -> str:\n    return text\n"


def write_project(root: Path, flows: int, lines: int) -> None:
    (root / "flows" / "echo").mkdir(parents=True)
    (root / "flows" / "echo" / "flow.dag.yaml").write_text(FLOW)
    (root / "flows" / "echo" / "echo.py").write_text(ECHO)
    (root / "data").mkdir()
    (root / "data" / "d.jsonl").write_text("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(lines)))
    entries = "".join(textwrap.dedent(f"""\
      f{i}:
        path: flows/echo
        data: data/d.jsonl
        column_mapping: {{text: '${{data.text}}'}}
        resources: {{instance_type: Standard_D4as_v4}}
    """).replace("\n", "\n  ") for i in range(flows))
    (root / "llmops.yaml").write_text(
        "version: 1\nflows:\n  " + entries.rstrip() + "\n"
        f"azureml: {{subscription_id: '{SUB}', resource_group: rg-llmops, workspace: ws-llmops}}\n")


def one(flows: int, lines: int, args: argparse.Namespace) -> dict[str, float]:
    from azure.ai.ml._artifacts._blob_storage_helper import BlobStorageClient
    from promptflow.azure._restclient.service_caller_factory import _FlowServiceCallerFactory

    service = args.startup + lines * args.per_line / args.service_workers
    virtual = [0.0]
    with tempfile.TemporaryDirectory(prefix="llmops-azsim-") as tmp, FakeWorkspace() as ws:
        root = Path(tmp)
        write_project(root, flows, lines)
        ws.clock = lambda: virtual[0]
        ws.service_s = lambda run: service
        BlobStorageClient.upload = upload_stub(ws)  # type: ignore[method-assign]
        _FlowServiceCallerFactory.caller_cache_by_workspace_id = {}

        def sleep(seconds: float) -> None:
            virtual[0] += seconds

        BACKENDS["azureml"] = lambda ctx: AzureMLRuns(
            ctx, credential=FakeCredential(), client_kwargs={"transport": ws.transport()}, polling=Polling(),
            sleep=sleep, clock=lambda: virtual[0] + time.perf_counter())
        cwd = os.getcwd()
        os.chdir(root)
        started = time.perf_counter()
        try:
            with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
                code = main(["batch-run", "--backend", "azureml", "--state-dir", str(root / ".llmops"),
                             "--platform", "local"])
        finally:
            os.chdir(cwd)
        client = time.perf_counter() - started
        if code != 0:
            raise SystemExit(f"batch-run exited {code}:\n{err.getvalue()[-2000:]}")
        summary = json.loads((root / ".llmops" / "summary.json").read_text())
        assert all(f["run"]["lines_total"] == lines for f in summary["flows"].values())
        requests = len(ws.log)
    per_flow_client = client / flows
    ours = client + virtual[0]
    peer = flows * (per_flow_client + math.ceil(service / PFAZURE_STREAM_S) * PFAZURE_STREAM_S)
    return {"service": service, "ours": ours, "client": client, "waited": virtual[0], "peer": peer,
            "ideal": service, "requests": requests}


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", default="1,2,4,8")
    parser.add_argument("--lines", default="10,100,1000")
    parser.add_argument("--startup", type=float, default=120.0, help="service: compute session start, s")
    parser.add_argument("--per-line", type=float, default=2.0, help="service: one line, s")
    parser.add_argument("--service-workers", type=int, default=16, help="service: lines run at once")
    args = parser.parse_args(argv)
    os.environ.setdefault("PF_HOME_DIRECTORY", tempfile.mkdtemp(prefix="llmops-azsim-pf-"))
    pf_client_class()
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("promptflow")]:
        logging.getLogger(name).setLevel(logging.ERROR)  # its "compute session" notice, once per run
    print(f"service time per run = {args.startup:g} s + lines x {args.per_line:g} s / {args.service_workers} "
          "(a parameter: not measured)")
    print(f"{'flows':>5} {'lines':>6} {'service s':>10} | {'llmops-ci s':>11} {'(client':>8} {'waited)':>8} "
          f"{'requests':>8} | {'pfazure s':>9} | {'ideal s':>8} | {'llmops/ideal':>12}")
    for flows in (int(x) for x in args.flows.split(",")):
        for lines in (int(x) for x in args.lines.split(",")):
            r = one(flows, lines, args)
            print(f"{flows:>5} {lines:>6} {r['service']:>10.0f} | {r['ours']:>11.1f} {r['client']:>8.1f} "
                  f"{r['waited']:>8.1f} {r['requests']:>8.0f} | {r['peer']:>9.1f} | {r['ideal']:>8.1f} | "
                  f"{r['ours'] / r['ideal']:>12.2f}")
    print("llmops-ci: all flows submitted at once and awaited together; its extra time over ideal is the client's "
          "own time plus the rounding of the last status check (back-off 5 s -> 30 s, capped by the lines' pace).")
    print("pfazure: one flow after the other (simulated from the same per-flow client time and 10 s stream "
          "checks).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
