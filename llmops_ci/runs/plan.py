"""What a batch or evaluation run submits, as the ``run.yml`` of prompt flow (``Run.schema.json``) states it.

The same document serves the dry run of every backend (``--dry-run`` on batch-run and eval-run: printed, with
the files the flow's snapshot holds) and the Azure ML submission (loaded by prompt flow's own run loader).
Nothing here imports promptflow or azure, or reaches a service.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmops_ci.core.errors import UsageError
from llmops_ci.engines.base import BackendContext
from llmops_ci.kinds import snapshot
from llmops_ci.results.records import RunJob, run_name
from llmops_ci.results.store import load_run

RUN_SCHEMA = "https://azuremlschemas.azureedge.net/promptflow/latest/Run.schema.json"
_NO_BASE_RUN = "-batch-run-not-made-yet"


@dataclass(frozen=True)
class Submission:
    """One run as a run.yml states it (``Run.schema.json``)."""

    flow_name: str  # the flow's name in llmops.yaml (for an evaluation, the flow it scores)
    name: str
    flow: Path
    data: Path | None
    run: str | None
    column_mapping: dict[str, Any]
    variant: str | None
    connections: dict[str, dict[str, Any]]
    environment_variables: dict[str, str]
    resources: dict[str, Any]
    info: Any = field(default=None, compare=False, repr=False)  # the FlowInfo, to snapshot it
    init: dict[str, Any] = field(default_factory=dict)  # a flex class entry's __init__ arguments
    details: dict[str, Any] = field(default_factory=dict)  # the flow's run.yml: display_name, description, ...
    evaluation: str | None = None  # the evaluation's name when the run scores the flow's run

    @property
    def label(self) -> str:
        """How the plan and the run's tags name it: ``classify`` or ``classify/accuracy``."""
        return f"{self.flow_name}/{self.evaluation}" if self.evaluation else self.flow_name

    def document(self, flow: Path | None = None) -> dict[str, Any]:
        """The run.yml; the name is always ours (one per CI run), the rest of a flow's own run.yml is kept."""
        tags = {**{str(k): str(v) for k, v in (self.details.get("tags") or {}).items()}, "llmops.flow": self.label}
        doc: dict[str, Any] = {"$schema": RUN_SCHEMA, "name": self.name,
                               "display_name": self.details.get("display_name") or self.label}
        if self.details.get("description"):
            doc["description"] = self.details["description"]
        doc.update({"tags": tags, "flow": str(flow or self.flow)})
        if self.data is not None:
            doc["data"] = str(self.data)
        for key in ("run", "column_mapping", "variant", "connections", "environment_variables", "resources",
                    "init"):
            value = getattr(self, key)
            if value:
                doc[key] = value
        for key in ("runtime", "identity"):
            if self.details.get(key):
                doc[key] = self.details[key]
        return doc


def submission(job: RunJob, resources: dict[str, Any], details: dict[str, Any] | None = None) -> Submission:
    return Submission(job.flow, job.name, job.path, job.data.absolute(), job.base_run, dict(job.column_mapping),
                      job.variant, {k: dict(v) for k, v in job.connections.items()},
                      dict(job.environment_variables), dict(resources), job.info, dict(job.init),
                      dict(details or {}), job.evaluation)


def planned(ctx: BackendContext, flow_names: list[str], evaluations: bool) -> list[Submission]:
    """What batch-run (or eval-run) would submit, from the config alone: ``${env:...}`` stays as written and an
    evaluation's base run is the batch run in the state dir, or a placeholder when there is none yet."""
    project = ctx.project
    out = []
    for name in flow_names:
        flow = project.config.flows[name]
        if not evaluations:
            if flow.data is None:
                raise UsageError(f"{flow.origin.doc.display}: flow '{flow.name}' has no 'data:' to run over")
            out.append(Submission(flow.name, run_name(flow.name), flow.path, flow.data, flow.base_run,
                                  dict(flow.column_mapping), flow.variant, dict(flow.connections),
                                  {str(k): str(v) for k, v in flow.environment_variables.items()},
                                  dict(flow.resources), project.info(flow.path), dict(flow.init),
                                  dict(flow.run_details)))
            continue
        base = load_run(ctx.state_dir, flow.name)
        base_name = str(base["name"]) if base else f"{flow.name}{_NO_BASE_RUN}"
        for ev in flow.evaluations.values():
            if ev.ref:
                raise UsageError(f"{ev.origin.doc.display}: evaluation '{flow.name}/{ev.name}' is an "
                                 f"{'evaluator' if ev.evaluator else 'scorer'} ({ev.ref}), which runs on --backend "
                                 "local only; run eval-run locally (it scores the run kept in the state dir)")
            out.append(Submission(flow.name, run_name(f"{flow.name}_{ev.name}"), ev.path,
                                  ev.data or flow.data, base_name, dict(ev.column_mapping), None,
                                  dict(ev.connections), {str(k): str(v) for k, v in ev.environment_variables.items()},
                                  dict(flow.resources), project.info(ev.path), dict(ev.init), evaluation=ev.name))
    return out


def dry_run_yaml(subs: list[Submission], backend: str, compute: dict[str, str] | None = None) -> str:
    """The runs as run.yml documents that ``promptflow._sdk._load_functions.load_run`` accepts, each with the
    files its snapshot uploads (and, given ``compute`` by label, where it runs) listed as comments."""
    docs = []
    for sub in subs:
        head = [f"# {sub.label}: the run --backend {backend} would submit"]
        if compute and sub.label in compute:
            head.append(f"# compute: {compute[sub.label]}")
        if sub.info is not None:
            with tempfile.TemporaryDirectory(prefix="llmops-dry-") as tmp:
                snap = snapshot(sub.info, Path(tmp) / sub.flow.name)
                files = sorted(p.relative_to(snap.folder).as_posix() for p in snap.folder.rglob("*") if p.is_file())
            where = ", uploaded to the workspace's default datastore" if backend != "local" else ""
            head.append(f"# snapshot ({len(files)} files{where}):")
            head += [f"#   {f}" for f in files]
        if sub.run and sub.run.endswith(_NO_BASE_RUN):
            head.append("# run: the batch run's name once batch-run has made it")
        docs.append("\n".join(head) + "\n" + yaml.safe_dump(sub.document(), sort_keys=False, allow_unicode=True))
    return "---\n".join(docs)
