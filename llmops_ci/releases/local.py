"""Register and deploy without a cloud: a file registry and a blue/green endpoint served on 127.0.0.1."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path

from llmops_ci.core.errors import UsageError
from llmops_ci.engines.promptflow.home import PFHome
from llmops_ci.kinds import inspect, snapshot_of
from llmops_ci.releases.slots import ServedRelease, spawn, wait_healthy
from llmops_ci.releases.spec import ModelSpec
from llmops_ci.results.records import ProviderConnection


class LocalRelease(ServedRelease):
    """``registry/<model>/<version>/`` holds the flow as registered; ``endpoints/<name>.json`` which slot serves."""

    engines = frozenset({"promptflow"})  # what prompt flow's serving app serves

    def register(self, spec: ModelSpec) -> tuple[str, str, bool]:
        if self.models.has(spec):
            return spec.name, spec.version, False
        folder = self.models.model_dir(spec.name, spec.version)
        entry = snapshot_of(spec.path, folder / "flow", variant=spec.variant, overrides=spec.connections).entry
        self.models.save(spec, entry=entry.name, variant=spec.variant,
                         chat={"input": spec.chat_input, "output": spec.chat_output, "history": spec.chat_history})
        return spec.name, spec.version, True

    def _serve(self, flow: Path, port: int, connections: tuple[ProviderConnection, ...], env: dict[str, str],
               name: str) -> tuple[subprocess.Popen[str], Path]:
        info = inspect(flow)
        if info is None:
            raise UsageError(f"{flow}: the registered model holds no flow that llmops-ci recognises; register it "
                             "again")
        tmp = Path(tempfile.mkdtemp(prefix="llmops-serve-"))
        # prompt flow's home (its keyring file, its run store) lives and dies with the serving process's temporary
        # folder, never in the state dir that CI publishes
        home = PFHome(tmp / "pf-home").prepare()
        request = {"flow": str(flow), "entry": str(info.definition), "port": port, "environment_variables": env,
                   "provider_connections": [asdict(c) for c in connections], "tmp": str(tmp)}
        # the state dir it serves from is named in its environment, as the runners' is
        environment = {**home.environment(self.environ, tmp), "LLMOPS_CI_STATE_DIR": str(self.state_dir)}
        return spawn("llmops_ci.engines.promptflow.serve", request, env=environment, cwd=home.root,
                     log_path=self.state_dir / "logs" / f"serve-{name}.log", tmp=tmp), tmp

    @staticmethod
    def _wait_healthy(url: str, proc: subprocess.Popen[str]) -> str | None:
        return wait_healthy(url, proc, path=LocalRelease.server.health, server=LocalRelease.server.what)
