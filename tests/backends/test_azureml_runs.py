"""Batch and evaluation runs on Azure ML, offline: the real ``PFClient``/``MLClient`` code against a fake
workspace on 127.0.0.1 (tests/fake_azureml_runs.py), driven through ``llmops-ci batch-run``/``eval-run``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from llmops_ci.backends import BACKENDS
from llmops_ci.backends.azureml_runs import AzureMLRuns, Polling, pf_client_class
from tests.fake_azureml_runs import SUB, FakeCredential, FakeRun, FakeWorkspace, upload_stub
from tests.helpers.projects import CliResult, Project

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:.*:marshmallow.warnings.RemovedInMarshmallow4Warning")]
pf_client_class()  # promptflow.azure importable whatever azure-ai-ml version is installed

CONFIG = """\
version: 1
connections:
  openai:
    type: open_ai
    base_url: ${env:OPENAI_BASE_URL}
    api_key: ${env:OPENAI_API_KEY}
flows:
  classify:
    path: flows/classify
    data: data/classify.jsonl
    column_mapping:
      text: ${data.text}
    variant: ${classify.variant_1}
    connections:
      classify: {connection: openai, model: gpt-4o-mini}
    environment_variables:
      MODE: ${env:CLASSIFY_MODE}
    resources:
      instance_type: Standard_D4as_v4
    max_failed_lines: 0
    evaluations:
      accuracy:
        path: flows/eval
        column_mapping:
          groundtruth: ${data.label}
          prediction: ${run.outputs.category}
azureml:
  subscription_id: ${env:AZURE_SUBSCRIPTION_ID}
  resource_group: ${env:AZURE_RESOURCE_GROUP}
  workspace: ${env:AZUREML_WORKSPACE}
"""
RUN_PATH = r"/BulkRuns/[^/]+"


def _category(text: str) -> str:
    return "App" if "app" in text.lower() else "Movie" if "trailer" in text.lower() else "None"


def _answer(run: FakeRun, index: int, inputs: dict[str, Any]) -> tuple[str, Any, str | None]:
    """The classify flow answers right; the evaluation grades what it got."""
    if "groundtruth" in inputs:
        return "Completed", {"grade": "Correct" if inputs["groundtruth"] == inputs["prediction"] else "Incorrect"}, None
    return "Completed", {"category": _category(inputs["text"])}, None


@pytest.fixture
def workspace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeWorkspace]:
    from azure.ai.ml._artifacts._blob_storage_helper import BlobStorageClient
    from promptflow.azure._restclient.service_caller_factory import _FlowServiceCallerFactory

    with FakeWorkspace(_answer) as ws:
        ws.connections = {"openai"}
        ws.metrics = lambda run: ({"accuracy": sum(line["output"]["grade"] == "Correct" for line in run.lines)
                                   / len(run.lines)} if run.body.get("variantRunId") else {})
        monkeypatch.setattr(BlobStorageClient, "upload", upload_stub(ws))
        monkeypatch.setattr(_FlowServiceCallerFactory, "caller_cache_by_workspace_id", {})
        monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
        monkeypatch.setenv("AZURE_RESOURCE_GROUP", "rg-llmops")
        monkeypatch.setenv("AZUREML_WORKSPACE", "ws-llmops")
        monkeypatch.setenv("CLASSIFY_MODE", "strict")
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # the workspace's connections are used, not these
        monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
        for var in ("PF_HOME_DIRECTORY", "PYTHON_KEYRING_BACKEND"):  # the backend sets these for promptflow
            monkeypatch.setenv(var, os.environ.get(var, ""))
        yield ws


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def backend(workspace: FakeWorkspace, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
            ) -> Callable[..., None]:
    """Registers the azureml backend with the fake's credential and transport (the seam a plug-in uses)."""

    def use(**polling: Any) -> None:
        settings = Polling(**{"first_s": 5.0, "max_s": 40.0, "call_timeout_s": 20.0, **polling})
        monkeypatch.setitem(BACKENDS, "azureml", lambda ctx: AzureMLRuns(
            ctx, credential=FakeCredential(), client_kwargs={"transport": workspace.transport()},
            polling=settings, sleep=sleeps.append))

    use()
    return use


@pytest.fixture
def azproject(project: Callable[..., Project]) -> Project:
    return project({"llmops.yaml": CONFIG})


def _summary(proj: Project) -> dict[str, Any]:
    return json.loads(proj.read(".llmops/summary.json"))


def _lines(proj: Project, rel: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proj.read(rel).splitlines()]


# ------------------------------------------------------------------------------------------------ happy path


def test_batch_then_eval_run(azproject: Project, workspace: FakeWorkspace, backend: None, sleeps: list[float],
                             cli: Callable[..., CliResult]) -> None:
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 0, result.err

    # the request sequence: workspace, the checks, the uploads' datastore, submission, then status polls
    arm = [c for c in workspace.calls("arm")]
    assert arm[0] == ("GET", "arm:")
    assert ("GET", "arm:/connections/openai") in arm
    submit = workspace.calls().index(("POST", "pfs:/BulkRuns/submit"))
    assert workspace.calls().index(("GET", "arm:/connections/openai")) < submit
    assert ("GET", "arm:/datastores") in workspace.calls()[:submit]
    name = next(iter(workspace.runs))
    after = workspace.calls()[submit + 1:]
    assert ("POST", "history:/rundata") in after
    assert ("GET", f"pfs:/BulkRuns/{name}/logContent") in after
    assert ("GET", f"pfs:/BulkRuns/{name}/childRuns") in after
    assert ("POST", f"metric:/runs/{name}/lastvalues") in after
    assert after.index(("GET", f"pfs:/BulkRuns/{name}/childRuns")) > after.index(
        ("GET", f"pfs:/BulkRuns/{name}/logContent"))

    body = workspace.runs[name].body
    assert body["nodeVariant"] == "${classify.variant_1}"
    assert body["connections"] == {"classify": {"connection": "openai", "model": "gpt-4o-mini"}}
    assert body["environmentVariables"] == {"MODE": "strict"}
    assert body["inputsMapping"] == {"text": "${data.text}"}
    assert body["vmSize"] == "Standard_D4as_v4"
    assert body["runDisplayName"] == "classify"
    assert body["flowDefinitionDataStoreName"] == "workspaceblobstore"
    assert body["flowDefinitionBlobPath"].endswith("/classify/flow.dag.yaml")
    snapshot = next(files for path, files in workspace.uploaded_files.items() if path.endswith("/classify"))
    assert snapshot == ["classify.jinja2", "clean.py", "flow.dag.yaml", "parse.py"]
    assert body["batchDataInput"]["dataUri"].endswith("/classify.jsonl")

    summary = _summary(azproject)["flows"]["classify"]["run"]
    assert summary["name"] == name
    assert (summary["status"], summary["lines_total"], summary["lines_failed"]) == ("completed", 3, 0)
    assert summary["tokens"] == {"prompt": 30, "completion": 6, "total": 36}
    assert summary["latency_p50"] == 1.5
    lines = _lines(azproject, ".llmops/runs/classify/lines.jsonl")
    assert [line["outputs"] for line in lines] == [{"category": "App"}, {"category": "Movie"}, {"category": "None"}]
    assert lines[0]["inputs"] == {"text": "Download our app"}
    # the portal URL is logged at submission, the service's log is streamed
    assert f"https://ml.azure.com/prompts/flow/bulkrun/run/{name}/details" in result.err
    assert "classify | Finished 3 / 3 lines." in result.err
    assert "Running -> Completed" in result.err
    assert sleeps and all(s <= 40.0 for s in sleeps)

    result = cli("eval-run", "--backend", "azureml")
    assert result.code == 0, result.err
    eval_name = next(n for n in workspace.runs if n != name)
    assert workspace.runs[eval_name].body["variantRunId"] == name  # the base run, as pfazure references it
    assert workspace.runs[eval_name].body["inputsMapping"] == {"groundtruth": "${data.label}",
                                                              "prediction": "${run.outputs.category}"}
    evaluation = _summary(azproject)["flows"]["classify"]["evaluations"]["accuracy"]
    assert evaluation["metrics"] == {"accuracy": 1.0}  # system metrics (__pf__.lines.completed) left out
    assert (evaluation["status"], evaluation["lines_total"], evaluation["run"]) == ("completed", 3, eval_name)
