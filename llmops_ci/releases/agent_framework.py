"""Register and deploy Agent Framework flows without a cloud: the same file registry and blue/green slots on
127.0.0.1 as prompt flow's (``local_release``), each slot a ``maf_serve`` process answering the OpenAI Responses
API (``/v1/responses``) and ``/score`` (what smoke tests call).

The deployed model calls its real endpoints (no record/replay proxy in serving): a declarative file's
``=Env.NAME`` values and ``kind: reference`` connections are resolved from the environment and llmops.yaml
at deploy time, as for a run.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_ci.core.errors import UsageError
from llmops_ci.engines.agent_framework.engine import agents_environment, declarative_target
from llmops_ci.kinds import KINDS
from llmops_ci.kinds.agent_framework.spec import AgentFrameworkSpec
from llmops_ci.kinds.base import FlowInfo
from llmops_ci.releases.slots import ServedRelease, spawn
from llmops_ci.releases.spec import ModelSpec
from llmops_ci.results.records import ProviderConnection

if TYPE_CHECKING:
    from llmops_ci.engines.base import BackendContext
    from llmops_ci.project.loaded import Project


class _Direct:
    """Stands where the run's proxy route stands: each connection's URL is its real endpoint."""

    def __init__(self, connections: tuple[ProviderConnection, ...]) -> None:
        self.upstreams: dict[str, str | None] = {}
        for conn in connections:
            self.upstreams[conn.name] = conn.values.get("base_url") or conn.values.get("api_base")

    def url_for(self, name: str) -> str:
        url = self.upstreams.get(name)
        if not url:
            raise UsageError(f"connection '{name}' has no endpoint (base_url or api_base) to serve with; set it in "
                             "llmops.yaml")
        return url


class MafRelease(ServedRelease):
    engines = frozenset({"agent_framework"})

    def __init__(self, state_dir: Path, registry: Path, environ: dict[str, str], project: Project) -> None:
        super().__init__(state_dir, registry, environ)
        self.project = project

    def _info(self, path: Path) -> FlowInfo:
        info = self.project.info(path)
        if info is None or not self.deploys(info):
            raise UsageError(f"{path}: not an Agent Framework flow")
        return info

    def register(self, spec: ModelSpec) -> tuple[str, str, bool]:
        if self.models.has(spec):
            return spec.name, spec.version, False
        folder = self.models.model_dir(spec.name, spec.version)
        info = self._info(spec.path)
        snap = KINDS["agent_framework"].snapshot(info, folder / "flow", variant=spec.variant,
                                                 overrides=spec.connections)
        self.models.save(spec, kind="agent_framework", entry=snap.entry.relative_to(folder / "flow").as_posix(),
                         python_entry=self._entry(spec.path))
        return spec.name, spec.version, True

    def _entry(self, path: Path) -> list[str] | None:
        for flow in self.project.config.flows.values():
            spec = flow.block(AgentFrameworkSpec)
            if spec is not None and spec.code is not None and flow.path.absolute() == path.absolute():
                return [spec.code.relative_to(flow.path.absolute()).as_posix(), spec.attr]
        return None

    def _serve(self, flow: Path, port: int, connections: tuple[ProviderConnection, ...], env: dict[str, str],
               name: str) -> tuple[subprocess.Popen[str], Path]:
        record = json.loads((flow.parent / "model.json").read_text(encoding="utf-8"))
        overlay = {**self.environ, **env}
        if record.get("python_entry"):
            code, attr = record["python_entry"]
            request: dict[str, Any] = {"target": "python", "code": str(flow / code), "attr": attr,
                                       "cwd": str((flow / code).parent)}
        else:
            definition = flow / record["entry"]
            info = KINDS["agent_framework"].inspect(definition)
            target = declarative_target(info, _Direct(connections), connections, overlay, False)
            request = {**target.request, "target": target.kind, "structured": target.structured}
        request.update(port=port, model_name=record["name"])
        tmp = Path(tempfile.mkdtemp(prefix="llmops-serve-"))
        return spawn("llmops_ci.engines.agent_framework.serve", request, env=agents_environment(overlay), cwd=tmp,
                     log_path=self.state_dir / "logs" / f"serve-{name}.log", tmp=tmp), tmp


def from_context(ctx: BackendContext) -> MafRelease:
    return MafRelease(ctx.state_dir, ctx.registry or ctx.state_dir / "registry", dict(ctx.environ), ctx.project)
