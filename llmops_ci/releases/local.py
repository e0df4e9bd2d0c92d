"""Register and deploy without a cloud: a file registry and a blue/green endpoint served on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmops_ci.core.errors import UsageError
from llmops_ci.engines.plumbing import reap
from llmops_ci.engines.promptflow.home import PFHome
from llmops_ci.kinds import inspect, snapshot_of
from llmops_ci.releases.slots import free_port, wait_healthy
from llmops_ci.releases.slots import smoke as http_smoke
from llmops_ci.releases.spec import DeployPlan, DeployResult, ModelSpec, other_slot
from llmops_ci.results.records import ProviderConnection, resolve_connection_refs
from llmops_ci.results.state import write_json_atomic

log = logging.getLogger("llmops_ci.local_release")


class LocalRelease:
    """``registry/<model>/<version>/`` holds the flow as registered; ``endpoints/<name>.json`` which slot serves."""

    name = "local"

    def __init__(self, state_dir: Path, registry: Path, environ: dict[str, str]) -> None:
        self.state_dir, self.registry, self.environ = state_dir.absolute(), registry.absolute(), environ

    def model_dir(self, name: str, version: str) -> Path:
        return self.registry / name / version

    def register(self, spec: ModelSpec) -> tuple[str, str, bool]:
        folder = self.model_dir(spec.name, spec.version)
        if (folder / "model.json").is_file():
            return spec.name, spec.version, False
        entry = snapshot_of(spec.path, folder / "flow", variant=spec.variant, overrides=spec.connections).entry
        record = {"name": spec.name, "version": spec.version, "flow": spec.flow, "description": spec.description,
                  "entry": entry.name,
                  "tags": spec.tags, "resources": [asdict(r) for r in spec.resources], "variant": spec.variant,
                  "chat": {"input": spec.chat_input, "output": spec.chat_output, "history": spec.chat_history},
                  "registered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json_atomic(folder / "model.json", record)
        return spec.name, spec.version, True

    def dry_run_model(self, spec: ModelSpec) -> str:
        record = {k: v for k, v in asdict(spec).items() if k not in ("path", "connections")}
        record["path"] = str(spec.path)
        return "# would register (local registry)\n" + json.dumps(record, indent=2, default=str) + "\n"

    def dry_run_plan(self, plan: DeployPlan) -> str:
        steps = " -> ".join(f"{p}%" for p in plan.traffic)
        deployment = {"endpoint": plan.endpoint, "slot": "the idle one (blue on a new endpoint)",
                      "environment_variables": plan.environment_variables,
                      "smoke_tests": [t.name for t in plan.smoke_tests], "traffic": list(plan.traffic)}
        return (self.dry_run_model(plan.model) + f"# would deploy to local endpoint {plan.endpoint}: the idle slot, "
                f"{len(plan.smoke_tests)} smoke test(s), traffic {steps}\n"
                + json.dumps(deployment, indent=2) + "\n")

    def endpoint_state(self, endpoint: str) -> dict[str, Any]:
        path = self.state_dir / "endpoints" / f"{endpoint}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"serving": None, "slots": {}}

    def deploy(self, plan: DeployPlan, connections: tuple[ProviderConnection, ...], keep: bool) -> DeployResult:
        model = plan.model
        flow = self.model_dir(model.name, model.version) / "flow"
        if not flow.is_dir():
            raise UsageError(f"{model.name}:{model.version} is not in the registry {self.registry}; run "
                             f"'llmops-ci register --flow {model.flow}' first")
        state = self.endpoint_state(plan.endpoint)
        previous = state.get("serving")
        slot = other_slot(previous)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log.info("%s: deploying %s:%s to slot %s (%s)", plan.endpoint, model.name, model.version, slot, url)
        # prompt flow's serving app leaves ${connection.field} in environment variables as written: resolve here
        env = resolve_connection_refs(plan.environment_variables, connections)
        result = DeployResult(plan.endpoint, slot, previous, "rolled_back", {previous: 100} if previous else {},
                              url=url)
        # a signal (a CI cancel) from here on unwinds through the finally below, which stops the slot
        proc, tmp = self._serve(flow, port, connections, env, f"{plan.endpoint}-{slot}")
        try:
            failure = self._wait_healthy(url, proc)
            if failure is None:
                for test in plan.smoke_tests:  # reported as they run, before any traffic moves
                    smoke = http_smoke(f"{url}/score", test, plan.request_timeout_ms)
                    result.smoke.append(smoke)
                    log.info("%s: smoke test %s on %s: %s", plan.endpoint, test.name, slot,
                             "passed" if smoke.passed else smoke.error)
                failed = [s for s in result.smoke if not s.passed]
                if failed:
                    failure = "; ".join(f"smoke test {s.name}: {s.error}" for s in failed)
            if failure is not None:
                result.message = (f"{failure}; {'traffic stays on ' + previous if previous else 'nothing was serving'}"
                                  f", {slot} does not serve")
                return result
            for percent in plan.traffic:
                result.traffic = {slot: percent, **({previous: 100 - percent} if previous else {})}
                log.info("%s: traffic %s", plan.endpoint, ", ".join(f"{k} {v}%" for k, v in result.traffic.items()))
            result.traffic = {slot: 100}
            kept = state["slots"].get(previous or "") or {}
            state["slots"][slot] = {"model": model.name, "version": model.version, "deployed_at": time.time(),
                                    "url": url, "port": port, "pid": proc.pid if keep else None,
                                    "tmp": str(tmp) if keep else None}
            state["serving"] = slot
            write_json_atomic(self.state_dir / "endpoints" / f"{plan.endpoint}.json", state)
            # only once the endpoint's state names it: interrupted before, a kept slot would run unrecorded
            result.status = "deployed"
            _stop_kept(kept, plan.endpoint, previous)
            return result
        finally:
            if keep and result.status == "deployed":
                log.info("%s: %s keeps serving at %s/score (--keep); stop it with: kill %d", plan.endpoint, slot,
                         url, proc.pid)
            else:
                reap(proc)
                shutil.rmtree(tmp, ignore_errors=True)

    def _serve(self, flow: Path, port: int, connections: tuple[ProviderConnection, ...], env: dict[str, str],
               name: str) -> tuple[subprocess.Popen[str], Path]:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="llmops-serve-"))
        # prompt flow's home (its keyring file, its run store) lives and dies with the serving process's temporary
        # folder, never in the state dir that CI publishes
        home = PFHome(tmp / "pf-home").prepare()
        info = inspect(flow)
        if info is None:
            raise UsageError(f"{flow}: the registered model holds no flow that llmops-ci recognises; register it "
                             "again")
        request = {"flow": str(flow), "entry": str(info.definition), "port": port, "environment_variables": env,
                   "provider_connections": [asdict(c) for c in connections], "tmp": str(tmp)}
        # the state dir it serves from is named in its environment, as the runners' is
        env = {**home.environment(self.environ, tmp), "LLMOPS_CI_STATE_DIR": str(self.state_dir)}
        with (logs / f"serve-{name}.log").open("w", encoding="utf-8") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "llmops_ci.engines.promptflow.serve"], stdin=subprocess.PIPE,
                                    stdout=log_file, stderr=subprocess.STDOUT, cwd=home.root,
                                    env=env, start_new_session=True, text=True)
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(request))
            proc.stdin.close()
        except BaseException:  # an interrupt (or a dead child) before the caller holds it: it must not stay up
            reap(proc)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return proc, tmp

    @staticmethod
    def _wait_healthy(url: str, proc: subprocess.Popen[str]) -> str | None:
        return wait_healthy(url, proc, path="/health", server="the serving process")


def _stop_kept(slot: dict[str, Any], endpoint: str, name: str | None) -> None:
    """The slot that served before was kept running (--keep): it no longer serves, so stop it, if it is still
    our serving process (a pid can be reused)."""
    pid = slot.get("pid")
    if not isinstance(pid, int):
        return
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"llmops_ci.engines.promptflow.serve" in command or b"llmops_ci.engines.agent_framework.serve" in command:
        log.info("%s: stopping %s (process %d), which --keep left serving", endpoint, name, pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    if isinstance(slot.get("tmp"), str) and Path(slot["tmp"]).name.startswith("llmops-serve-"):
        shutil.rmtree(slot["tmp"], ignore_errors=True)

