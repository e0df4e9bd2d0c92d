"""Agent Framework flows on Azure ML: the dry run of the route Microsoft's migration guide describes (a custom
model holding the flow, a ``score.py`` with ``init()``/``run()`` loading it with the framework, a managed online
endpoint and deployment). Registering and deploying for real is not built: it says so (exit 2) at the flow's line.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import yaml

from llmops_ci.core.errors import ConfigError
from llmops_ci.kinds.agent_framework.spec import AgentFrameworkSpec
from llmops_ci.releases.base import Release
from llmops_ci.releases.spec import DeployPlan, DeployResult, ModelSpec
from llmops_ci.results.records import ProviderConnection

if TYPE_CHECKING:
    from llmops_ci.engines.base import BackendContext

SCHEMA = "https://azuremlschemas.azureedge.net/latest"
IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
PACKAGES = ["agent-framework-core==1.26.0", "agent-framework-declarative==1.4.0", "agent-framework-openai==1.17.0",
            "azureml-inference-server-http"]
SCORE = '''\
"""Scoring script for an Agent Framework {what} (managed online endpoint: init() once, run() per request)."""
import asyncio
import json
import os
import sys
from pathlib import Path

runnable = None


def init():
    global runnable
    root = Path(os.environ["AZUREML_MODEL_DIR"]) / "flow"
    sys.path.insert(0, str(root))
{load}


def run(raw_data):
    body = json.loads(raw_data)
    message = body.get("input")
    result = asyncio.run(runnable.run(message))
    outputs = result.get_outputs() if hasattr(result, "get_outputs") else [result]
    last = outputs[-1] if outputs else None
    text = getattr(last, "text", last)
    return {{"output": text if isinstance(text, (str, dict, list)) or text is None else str(text)}}
'''
LOAD_DECLARATIVE = '''\
    from agent_framework_declarative import AgentFactory, WorkflowFactory

    path = root / {definition!r}
    if {workflow!r}:
        runnable = WorkflowFactory().create_workflow_from_yaml_path(path)
    else:
        runnable = AgentFactory().create_agent_from_yaml_path(path)'''
LOAD_PYTHON = '''\
    import importlib

    found = getattr(importlib.import_module({module!r}), {attr!r})
    runnable = found() if callable(found) and not hasattr(found, "run") else found'''


class MafAzureML(Release):
    name = "azureml"
    engines = frozenset({"agent_framework"})

    def __init__(self, ctx: BackendContext) -> None:
        self.ctx = ctx

    def _refuse(self, spec: ModelSpec, what: str) -> ConfigError:
        flow = self.ctx.project.config.flows[spec.flow]
        return ConfigError([flow.where("path").problem(("path",), (
            f"'{spec.flow}' is a Microsoft Agent Framework flow: {what} on Azure ML is not built yet. "
            "'--dry-run' prints the custom model, score.py and managed online endpoint the migration guide "
            "describes; deploy them with the Azure ML CLI or SDK, or use --backend local"),
            "azureml-unsupported-kind")])

    def register(self, spec: ModelSpec) -> tuple[str, str, bool]:
        raise self._refuse(spec, "registering")

    def deploy(self, plan: DeployPlan, connections: tuple[ProviderConnection, ...], keep: bool) -> DeployResult:
        raise self._refuse(plan.model, "deploying")

    def _score(self, spec: ModelSpec) -> str:
        flow = self.ctx.project.config.flows[spec.flow]
        entry = flow.block(AgentFrameworkSpec)
        if entry is not None and entry.code is not None:
            load = LOAD_PYTHON.format(module=entry.code.stem, attr=entry.attr)
            return SCORE.format(what="Python entry", load=load)
        info = self.ctx.project.info(spec.path)
        definition = info.definition.name if info is not None else spec.path.name
        workflow = "Workflow" in (info.definition.read_text(encoding="utf-8") if info is not None else "")
        return SCORE.format(what="declarative file", load=LOAD_DECLARATIVE.format(definition=definition,
                                                                                  workflow=workflow))

    def _scope(self) -> str:
        azure = self.ctx.project.config.azureml
        return f"{azure.subscription_id}/{azure.resource_group}/{azure.workspace}" if azure else "(no azureml: block)"

    def dry_run_model(self, spec: ModelSpec) -> str:
        folder = spec.path if spec.path.is_dir() else spec.path.parent
        model = {"$schema": f"{SCHEMA}/model.schema.json", "name": spec.name, "version": spec.version,
                 "type": "custom_model", "path": str(folder), "description": spec.description or "",
                 "tags": {**spec.tags, "llmops.kind": "agent_framework"}}
        return (f"# would register in Azure ML workspace {self._scope()}: a custom model holding the flow\n"
                + yaml.safe_dump(model, sort_keys=False) + "# score.py (the deployment's scoring script)\n"
                + "\n".join("# " + line if line else "#" for line in self._score(spec).splitlines()) + "\n")

    def dry_run_plan(self, plan: DeployPlan) -> str:
        spec = plan.model
        endpoint = {"$schema": f"{SCHEMA}/managedOnlineEndpoint.schema.json", "name": plan.endpoint,
                    "auth_mode": "key"}
        deployment: dict[str, Any] = {
            "$schema": f"{SCHEMA}/managedOnlineDeployment.schema.json", "name": "blue", "endpoint_name": plan.endpoint,
            "model": f"azureml:{spec.name}:{spec.version}",
            "code_configuration": {"code": ".", "scoring_script": "score.py"},
            "environment": {"image": IMAGE, "conda_file": {"name": "agent-framework", "channels": ["conda-forge"],
                                                           "dependencies": ["python=3.11", "pip",
                                                                            {"pip": PACKAGES}]}},
            "instance_type": plan.instance_type or "Standard_DS3_v2", "instance_count": plan.instance_count,
            "environment_variables": plan.environment_variables}
        steps = " -> ".join(str(t) for t in plan.traffic)
        return (self.dry_run_model(spec) + "---\n" + yaml.safe_dump(endpoint, sort_keys=False) + "---\n"
                + yaml.safe_dump(deployment, sort_keys=False)
                + f"# smoke tests against blue directly: {', '.join(t.name for t in plan.smoke_tests) or 'none'}\n"
                + f"# traffic: blue {steps}\n# request: {json.dumps({'input': '<the user message>'})}\n")


def from_context(ctx: BackendContext) -> MafAzureML:
    return MafAzureML(ctx)
