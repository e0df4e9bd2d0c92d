"""Batch and evaluation runs on Azure ML, offline: the real ``PFClient``/``MLClient`` code against a fake
workspace on 127.0.0.1 (tests/fakes/azureml_runs.py), driven through ``llmops-ci batch-run``/``eval-run``."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from llmops_ci.runs import BACKENDS
from llmops_ci.runs.azureml import PF_ENV, AzureMLRuns, Polling
from llmops_ci.runs.azureml_service import pf_client_class
from tests.fakes.azureml_runs import SUB, FakeCredential, FakeRun, FakeWorkspace, upload_stub
from tests.helpers.projects import CliResult, Project

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:.*:marshmallow.warnings.RemovedInMarshmallow4Warning")]
try:
    pf_client_class()  # promptflow.azure importable whatever azure-ai-ml version is installed
except ImportError as exc:
    pytest.skip(f"promptflow-azure is not installed ({exc})", allow_module_level=True)

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
        for var in PF_ENV:  # the backend sets these for promptflow; restored after the test
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
    assert not azproject.path(".llmops/pf-home").exists()  # prompt flow's home is never left in the state dir

    # the request sequence: the workspace, our checks, then what create_or_update resolves in parallel (the
    # default datastore for the data and the code, the trace settings), the submission, the read-back
    # (run history + the run's studio URL), status checks (status, URL, log) until it ends, the lines (pages of
    # 25 until an empty one) and the metrics (after one more status read)
    name = next(iter(workspace.runs))
    calls = workspace.calls()
    submit = calls.index(("POST", "pfs:/BulkRuns/submit"))
    assert calls[:2] == [("GET", "arm:"), ("GET", "arm:/connections/openai")]
    assert set(calls[2:submit]) == {("GET", "arm:/datastores"), ("GET", "arm:/datastores/workspaceblobstore"),
                                    ("GET", "pfs:/TraceSessions")}
    status = [("POST", "history:/rundata"), ("GET", f"pfs:/BulkRuns/{name}")]
    poll = [*status, ("GET", f"pfs:/BulkRuns/{name}/logContent")]
    polls = (len(calls) - submit - 1 - len(status) - 2 - len(status) - 1) // len(poll)
    assert calls[submit:] == [
        ("POST", "pfs:/BulkRuns/submit"), *status, *poll * polls,
        ("GET", f"pfs:/BulkRuns/{name}/childRuns"), ("GET", f"pfs:/BulkRuns/{name}/childRuns"),
        *status, ("POST", f"metric:/runs/{name}/lastvalues")]
    assert polls == 3  # Preparing -> Running -> Running -> Completed

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
    assert summary["duration_s"] == 7.0  # the service's start and end, not our waiting
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


# ------------------------------------------------------------------------------------------------ lines and flows


def test_completed_run_with_failed_lines_is_not_success(azproject: Project, workspace: FakeWorkspace,
                                                         backend: None, cli: Callable[..., CliResult]) -> None:
    def answer(run: FakeRun, index: int, inputs: dict[str, Any]) -> tuple[str, Any, str | None]:
        if index == 1:
            return "Failed", None, "Execution failure in 'parse': (JSONDecodeError) Expecting value"
        return _answer(run, index, inputs)

    workspace.answer = answer
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 1, result.err
    name = next(iter(workspace.runs))
    assert workspace.runs[name].status == "Completed"  # the service says Completed ...
    run = _summary(azproject)["flows"]["classify"]["run"]
    assert (run["status"], run["lines_total"], run["lines_failed"]) == ("failed", 3, 1)  # ... we do not
    assert run["errors"] == [{"line": 2, "node": "parse",  # 1-based, as lint's
                              "message": "Execution failure in 'parse': (JSONDecodeError) Expecting value"}]
    lines = _lines(azproject, ".llmops/runs/classify/lines.jsonl")
    assert [line["status"] for line in lines] == ["Completed", "Failed", "Completed"]
    assert "line 2 (node parse)" in result.err


def test_failed_run_reports_the_service_error(azproject: Project, workspace: FakeWorkspace, backend: None,
                                              cli: Callable[..., CliResult]) -> None:
    workspace.final["classify"] = "Failed"
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 1
    run = _summary(azproject)["flows"]["classify"]["run"]
    # a run that failed as a whole counts the data's lines, every one failed (#12)
    assert (run["status"], run["lines_total"], run["lines_failed"]) == ("failed", 3, 3)
    assert run["error"].startswith("the compute session failed to start")
    assert "the compute session failed to start" in result.err
    name = next(iter(workspace.runs))
    assert ("POST", f"metric:/runs/{name}/lastvalues") not in workspace.calls()  # no metrics of a failed run


RUN_FILE = """\
version: 1
connections:
  openai:
    type: open_ai
    api_key: ${env:OPENAI_API_KEY}
flows:
  from-run-file:
    run_file: runs/classify.run.yml
    connections:
      classify: {connection: openai, model: gpt-4o-mini}
    resources:
      compute: gpu-cluster
azureml:
  subscription_id: ${env:AZURE_SUBSCRIPTION_ID}
  resource_group: ${env:AZURE_RESOURCE_GROUP}
  workspace: ${env:AZUREML_WORKSPACE}
"""


def test_resources_from_a_run_file(project: Callable[..., Project], workspace: FakeWorkspace, backend: None,
                                   cli: Callable[..., CliResult]) -> None:
    project({"llmops.yaml": RUN_FILE, "runs/classify.run.yml": """\
        flow: ../flows/classify
        data: ../data/classify.jsonl
        column_mapping: {text: '${data.text}'}
        resources: {instance_type: Standard_E4s_v3, compute: cpu-cluster}
        """})
    workspace.computes = {"gpu-cluster"}
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 0, result.err
    body = next(iter(workspace.runs.values())).body
    assert (body["vmSize"], body["computeName"]) == ("Standard_E4s_v3", "gpu-cluster")  # llmops.yaml wins


TWO_FLOWS = CONFIG.replace("""azureml:""", """  summarize:
    path: flows/classify
    data: data/classify.jsonl
    column_mapping:
      text: ${data.text}
    connections:
      classify: {model: gpt-4o-mini}
    resources:
      compute: cpu-cluster
azureml:""")


def test_flows_are_submitted_together_and_awaited_together(project: Callable[..., Project],
                                                          workspace: FakeWorkspace, backend: None,
                                                          sleeps: list[float],
                                                          cli: Callable[..., CliResult]) -> None:
    proj = project({"llmops.yaml": TWO_FLOWS})
    workspace.computes = {"cpu-cluster"}
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 0, result.err
    calls = workspace.calls()
    submits = [i for i, c in enumerate(calls) if c == ("POST", "pfs:/BulkRuns/submit")]
    details = [i for i, c in enumerate(calls) if c[1].endswith("/childRuns")]
    assert len(submits) == 2 and submits[1] < min(details)  # both in flight before either is read back
    assert ("GET", "arm:/computes/cpu-cluster") in calls[:submits[0]]
    first, second = list(workspace.runs)
    polls = [c for c in calls[submits[1]:] if c[1].startswith("pfs:/BulkRuns/") and c[1].endswith("/logContent")]
    assert {p[1] for p in polls[:2]} == {f"pfs:/BulkRuns/{first}/logContent", f"pfs:/BulkRuns/{second}/logContent"}
    assert workspace.runs[second].body["computeName"] == "cpu-cluster"
    assert "vmSize" not in workspace.runs[second].body or workspace.runs[second].body["vmSize"] is None
    flows = _summary(proj)["flows"]
    assert flows["classify"]["run"]["name"] == first and flows["summarize"]["run"]["name"] == second
    assert flows["summarize"]["run"]["status"] == "completed"
    # one sleep per round for both runs, backing off while nothing moves, never above the ceiling
    assert sleeps[0] == 5.0 and max(sleeps) <= 40.0


# ------------------------------------------------------------------------------------------------ stopping


def test_ctrl_c_cancels_submitted_runs(azproject: Project, workspace: FakeWorkspace, backend: Callable[..., None],
                                       monkeypatch: pytest.MonkeyPatch, cli: Callable[..., CliResult]) -> None:
    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setitem(BACKENDS, "azureml", lambda ctx: AzureMLRuns(
        ctx, credential=FakeCredential(), client_kwargs={"transport": workspace.transport()}, sleep=interrupt))
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 130
    name = next(iter(workspace.runs))
    assert ("POST", f"pfs:/BulkRuns/{name}/cancel") in workspace.calls()
    assert workspace.runs[name].status == "Canceled"
    assert f"run {name} canceled (interrupted)" in result.err


def test_ctrl_c_during_submission_cancels_the_run_it_made(azproject: Project, workspace: FakeWorkspace,
                                                          backend: None, cli: Callable[..., CliResult]) -> None:
    workspace.interrupt_on = "pfs:/BulkRuns/submit"
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 130
    name = next(iter(workspace.runs))  # the submission reached the service ...
    assert workspace.runs[name].canceled  # ... and what it made was canceled, not left running
    assert "interrupted while submitting" in result.err


def test_sigterm_cancels_submitted_runs(azproject: Project, workspace: FakeWorkspace,
                                        monkeypatch: pytest.MonkeyPatch, cli: Callable[..., CliResult]) -> None:
    def terminated(seconds: float) -> None:  # the CI job is canceled while we wait
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setitem(BACKENDS, "azureml", lambda ctx: AzureMLRuns(
        ctx, credential=FakeCredential(), client_kwargs={"transport": workspace.transport()}, sleep=terminated))
    before = signal.getsignal(signal.SIGTERM)
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 130
    name = next(iter(workspace.runs))
    assert workspace.runs[name].canceled
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is ours only while runs are in flight


def test_a_run_past_the_time_limit_is_canceled(azproject: Project, workspace: FakeWorkspace,
                                               monkeypatch: pytest.MonkeyPatch, cli: Callable[..., CliResult]) -> None:
    workspace.final["classify"] = "Running"  # it never ends
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setitem(BACKENDS, "azureml", lambda ctx: AzureMLRuns(
        ctx, credential=FakeCredential(), client_kwargs={"transport": workspace.transport()},
        polling=Polling(timeout_s=60.0), sleep=sleep, clock=lambda: now[0]))
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 3
    assert "still not finished after 1 min and canceled" in result.err
    assert next(iter(workspace.runs.values())).canceled


def test_a_service_that_does_not_answer_cannot_hang(azproject: Project, workspace: FakeWorkspace,
                                                    backend: Callable[..., None],
                                                    cli: Callable[..., CliResult]) -> None:
    backend(call_timeout_s=0.5, transient_limit=1)
    workspace.hang_on = r"pfs:/BulkRuns/[^/]+/logContent"
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 3
    assert "no answer within 0.5 s" in result.err


# ------------------------------------------------------------------------------------------------ errors


def test_not_signed_in(azproject: Project, workspace: FakeWorkspace, backend: None,
                       cli: Callable[..., CliResult]) -> None:
    workspace.fail[("GET", "arm:")] = [401]
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 3
    assert "not authenticated" in result.err and "azure/login" in result.err
    assert "Traceback" not in result.err
    assert workspace.runs == {}


def test_no_permission_to_submit(azproject: Project, workspace: FakeWorkspace, backend: None,
                                 cli: Callable[..., CliResult]) -> None:
    workspace.fail[("POST", "pfs:/BulkRuns/submit")] = [403]
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 3
    assert "permission denied" in result.err and "AzureML Data Scientist" in result.err
    assert "Traceback" not in result.err


def test_throttled_submission_is_retried_then_reported(azproject: Project, workspace: FakeWorkspace,
                                                      backend: None, cli: Callable[..., CliResult]) -> None:
    workspace.fail[("POST", "pfs:/BulkRuns/submit")] = [429] * 50  # stays throttled
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 3
    assert "throttled or out of quota" in result.err
    tries = workspace.calls().count(("POST", "pfs:/BulkRuns/submit"))
    assert tries > 1  # azure-core's retry policy honoured Retry-After before giving up
    assert workspace.runs == {}


def test_transient_status_errors_are_ridden_out(azproject: Project, workspace: FakeWorkspace, backend: None,
                                                sleeps: list[float], cli: Callable[..., CliResult]) -> None:
    # the read-back inside the submission passes, the next two status checks get 503 (run history has no
    # client-side retry: requests.post), then the service recovers
    workspace.fail[("POST", r"history:/rundata")] = [0, 503, 503]
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 0, result.err
    assert "status check failed (1 of 5 tries)" in result.err and "(2 of 5 tries)" in result.err
    assert _summary(azproject)["flows"]["classify"]["run"]["status"] == "completed"
    assert sleeps[:3] == [5.0, 7.5, 11.25]  # backing off while the service fails


def test_throttled_read_back_after_submission_is_looked_up_again(azproject: Project, workspace: FakeWorkspace,
                                                                backend: None,
                                                                cli: Callable[..., CliResult]) -> None:
    workspace.fail[("POST", r"history:/rundata")] = [429, 429]  # the submission went through; reading it did not
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 0, result.err
    assert workspace.calls().count(("POST", "pfs:/BulkRuns/submit")) == 1  # not submitted twice
    assert "looking up run" in result.err and "(1 of 5 tries)" in result.err


def test_server_error_reading_details(azproject: Project, workspace: FakeWorkspace, backend: None,
                                      cli: Callable[..., CliResult]) -> None:
    workspace.fail[("GET", r"pfs:/BulkRuns/[^/]+/childRuns")] = [500] * 50
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 3
    assert "the service failed (HTTP 500" in result.err
    name = next(iter(workspace.runs))
    assert ("POST", f"pfs:/BulkRuns/{name}/cancel") not in workspace.calls()  # it had finished: nothing to cancel


def test_unknown_compute_and_connection(project: Callable[..., Project], workspace: FakeWorkspace, backend: None,
                                        cli: Callable[..., CliResult]) -> None:
    proj = project({"llmops.yaml": TWO_FLOWS})
    workspace.connections = set()
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 2
    text = proj.read("llmops.yaml").splitlines()
    compute_line = next(i for i, line in enumerate(text, 1) if "compute: cpu-cluster" in line)
    override_line = next(i for i, line in enumerate(text, 1) if "classify: {connection: openai" in line)
    assert f"llmops.yaml:{compute_line}" in result.err and "compute 'cpu-cluster' is not in workspace" in result.err
    assert f"llmops.yaml:{override_line}" in result.err and "connection 'openai' (node classify)" in result.err
    # the second flow has no override: its connection is where the flow file names it
    assert "flow.dag.yaml:" in result.err
    assert workspace.runs == {}  # nothing submitted


def test_missing_azureml_block(project: Callable[..., Project], workspace: FakeWorkspace, backend: None,
                               cli: Callable[..., CliResult]) -> None:
    project({"llmops.yaml": CONFIG.split("azureml:")[0]})
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 2
    assert "needs an 'azureml:' block" in result.err
    assert workspace.log == []


def test_unset_azureml_value(azproject: Project, workspace: FakeWorkspace, backend: None,
                             monkeypatch: pytest.MonkeyPatch, cli: Callable[..., CliResult]) -> None:
    monkeypatch.delenv("AZUREML_WORKSPACE")
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 2
    assert "AZUREML_WORKSPACE is not set" in result.err and "llmops.yaml:" in result.err
    assert workspace.log == []


def test_llm_cache_cannot_reach_the_cloud(azproject: Project, workspace: FakeWorkspace, backend: None,
                                          cli: Callable[..., CliResult]) -> None:
    result = cli("batch-run", "--backend", "azureml", "--llm-cache", "replay")
    assert result.code == 2
    assert "--backend azureml runs flows where the local LLM cache cannot reach them" in result.err
    assert "--llm-cache off" in result.err
    assert workspace.log == []


def test_test_step_says_to_use_local(azproject: Project, workspace: FakeWorkspace, backend: None,
                                     monkeypatch: pytest.MonkeyPatch, cli: Callable[..., CliResult]) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-" + "k" * 24)
    result = cli("test", "--backend", "azureml", "--flow", "classify", "--input", "text=hi")
    assert result.code == 2
    assert "use --backend local" in result.err


# ------------------------------------------------------------------------------------------------ dry run


def test_dry_run_needs_no_credentials_and_loads_as_run_yml(azproject: Project, workspace: FakeWorkspace,
                                                           backend: None, monkeypatch: pytest.MonkeyPatch,
                                                           cli: Callable[..., CliResult]) -> None:
    from promptflow._sdk._load_functions import load_run

    for var in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE", "CLASSIFY_MODE"):
        monkeypatch.delenv(var)
    for step in ("batch-run", "eval-run"):
        result = cli(step, "--backend", "azureml", "--dry-run")
        assert result.code == 0, result.err
        assert workspace.log == []
        path = azproject.path(f"{step}.run.yml")
        path.write_text(result.out)
        run = load_run(path)
        assert run._resources == {"instance_type": "Standard_D4as_v4"}
        if step == "batch-run":
            assert "#   classify.jinja2\n#   clean.py\n#   flow.dag.yaml\n#   parse.py\n" in result.out
            assert (run.variant, run.column_mapping) == ("${classify.variant_1}", {"text": "${data.text}"})
            assert run.environment_variables == {"MODE": "${env:CLASSIFY_MODE}"}  # as written: no secret printed
            assert run.connections == {"classify": {"connection": "openai", "model": "gpt-4o-mini"}}
            assert Path(run.flow) == azproject.path("flows/classify")
            assert Path(str(run.data)) == azproject.path("data/classify.jsonl")
        else:
            assert run.run == "classify-batch-run-not-made-yet"
            assert run.column_mapping["prediction"] == "${run.outputs.category}"
    assert not azproject.path(".llmops/runs").exists()
    # once batch-run has made its run, the evaluation's dry run names it
    azproject.write(".llmops/runs/classify/run.json", '{"name": "classify_20261201_000000_abcdef"}')
    result = cli("eval-run", "--backend", "azureml", "--dry-run")
    assert result.code == 0, result.err
    assert "\nrun: classify_20261201_000000_abcdef\n" in result.out
    assert workspace.log == []


def test_dry_run_on_local_prints_the_same_run_yml(azproject: Project, cli: Callable[..., CliResult]) -> None:
    result = cli("batch-run", "--dry-run")
    assert result.code == 0, result.err
    assert "the run --backend local would submit" in result.out
    assert "resources:\n  instance_type: Standard_D4as_v4\n" in result.out


def test_waits_follow_the_pace_of_the_lines(project: Callable[..., Project], workspace: FakeWorkspace,
                                            monkeypatch: pytest.MonkeyPatch, cli: Callable[..., CliResult]) -> None:
    rows = "".join(json.dumps({"text": f"text {i}", "label": "None"}) + "\n" for i in range(200))
    proj = project({"llmops.yaml": CONFIG, "data/classify.jsonl": rows})
    now = [0.0]
    workspace.clock = lambda: now[0]
    workspace.service_s = lambda run: 300.0  # virtual seconds from submission to the last line

    def sleep(seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setitem(BACKENDS, "azureml", lambda ctx: AzureMLRuns(
        ctx, credential=FakeCredential(), client_kwargs={"transport": workspace.transport()}, sleep=sleep,
        clock=lambda: now[0]))
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 0, result.err
    # the back-off alone (5 s growing to 30 s) could notice the end up to 30 s late; the lines' pace says when
    assert 300.0 <= now[0] < 300.0 + 5.0  # (310.9 s without the pace)
    assert _summary(proj)["flows"]["classify"]["run"]["lines_total"] == 200


# ------------------------------------------------------------------------------------------------ what pfazure honours


UAI = f"/subscriptions/{SUB}/resourceGroups/rg-llmops/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ci"


def test_a_run_files_details_are_submitted_and_the_lineage_is_the_flows(
        project: Callable[..., Project], workspace: FakeWorkspace, backend: None,
        cli: Callable[..., CliResult]) -> None:
    """display_name, description, tags and identity of a run.yml reach the service as pfazure sends them; the
    lineage and session ids come from the flow's folder, so two CI runs share one compute session."""
    from promptflow._utils.flow_utils import get_flow_lineage_id

    proj = project({"llmops.yaml": RUN_FILE, "runs/classify.run.yml": """\
        flow: ../flows/classify
        data: ../data/classify.jsonl
        display_name: nightly classify
        description: the classifier over the web pages
        tags: {team: search, tier: 1}
        identity: {type: managed}
        column_mapping: {text: '${data.text}'}
        """})
    workspace.computes = {"gpu-cluster"}
    workspace.identities = {UAI: "c1d2"}
    for _ in range(2):
        result = cli("batch-run", "--backend", "azureml")
        assert result.code == 0, result.err
    first, second = (run.body for run in workspace.runs.values())
    assert first["runDisplayName"] == "nightly classify"
    assert first["description"] == "the classifier over the web pages"
    assert first["tags"] == {"team": "search", "tier": "1", "llmops.flow": "from-run-file"}
    assert first["identity"] == UAI  # pfazure resolves it to the workspace's primary user-assigned identity
    lineage = get_flow_lineage_id(proj.path("flows/classify"))
    assert first["flowLineageId"] == second["flowLineageId"] == lineage
    assert first["sessionId"] == second["sessionId"]


FLEX_INIT = {
    "llmops.yaml": """\
        version: 1
        flows:
          greet:
            path: flows/greet
            data: data/names.jsonl
            column_mapping: {name: '${data.name}'}
            init: {greeting: Hello, punctuation: "!"}
        azureml:
          subscription_id: ${env:AZURE_SUBSCRIPTION_ID}
          resource_group: ${env:AZURE_RESOURCE_GROUP}
          workspace: ${env:AZUREML_WORKSPACE}
        """,
    "flows/greet/flow.flex.yaml": "entry: greet:Greeter\n",
    "flows/greet/greet.py": """\
        class Greeter:
            def __init__(self, greeting: str, punctuation: str = "."):
                self.greeting, self.punctuation = greeting, punctuation

            def __call__(self, name: str) -> str:
                return f"{self.greeting}, {name}{self.punctuation}"
        """,
    "data/names.jsonl": '{"name": "Ada"}\n',
}


def test_a_flex_class_entry_gets_its_init_on_azure_ml(project: Callable[..., Project], workspace: FakeWorkspace,
                                                      backend: None, cli: Callable[..., CliResult]) -> None:
    project(FLEX_INIT, base=False)
    workspace.answer = lambda run, index, inputs: ("Completed", {"output": f"Hello, {inputs['name']}!"}, None)
    dry = cli("batch-run", "--backend", "azureml", "--dry-run")
    assert dry.code == 0, dry.err
    assert "init:\n  greeting: Hello\n  punctuation: '!'\n" in dry.out
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 0, result.err
    body = next(iter(workspace.runs.values())).body
    assert body["initKWargs"] == {"greeting": "Hello", "punctuation": "!"}


def test_a_secret_in_init_is_refused_for_azure_ml(project: Callable[..., Project], workspace: FakeWorkspace,
                                                  backend: None, cli: Callable[..., CliResult],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    files = dict(FLEX_INIT)
    files["llmops.yaml"] = files["llmops.yaml"].replace(
        "init: {greeting: Hello, punctuation: \"!\"}",
        "init: {greeting: Hello, model_config: {api_key: '${env:LLM_KEY}', endpoint: https://x}}")
    files["flows/greet/greet.py"] = files["flows/greet/greet.py"].replace('punctuation: str = "."',
                                                                          "model_config: dict = None")
    project(files, base=False)
    monkeypatch.setenv("LLM_KEY", "sk-not-for-the-run-properties-000000")
    result = cli("batch-run", "--backend", "azureml")
    assert result.code == 2, result.err
    assert "init: model_config.api_key would be stored in clear" in result.err
    assert "llmops.yaml:7:" in result.err
    assert workspace.runs == {}


def test_the_dry_run_names_the_compute_each_run_gets(azproject: Project, cli: Callable[..., CliResult],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    result = cli("batch-run", "--backend", "azureml", "--dry-run")
    assert "# compute: a serverless compute session, instance type Standard_D4as_v4\n" in result.out
    azproject.replace("llmops.yaml", "    resources:\n      instance_type: Standard_D4as_v4\n", "")
    result = cli("batch-run", "--backend", "azureml", "--dry-run")
    assert result.code == 0, result.err
    assert "# compute: a serverless compute session of the workspace's default instance type (runtime " \
           "'automatic')" in result.out


# ------------------------------------------------------------------------------------------------ engines


def test_flows_on_an_engine_azure_ml_lacks_are_refused_at_their_path_line(
        project: Callable[..., Project], cli: Callable[..., CliResult]) -> None:
    """Prompt flow's engine only: an MLflow agent (which a prompty-only blocklist let through) is refused like a
    prompty 2.x file, each at its flow's ``path:`` line, before anything is submitted."""
    from tests.engines.test_execute_agents import AGENT_PROJECT
    from tests.runs.test_toy_target import PROMPTY2

    proj = project({**AGENT_PROJECT, "flows/ask/ask.prompty": PROMPTY2}, base=False)
    proj.replace("llmops.yaml", "flows:\n", "flows:\n  ask:\n    path: flows/ask/ask.prompty\n"
                 "    data: data/support.jsonl\n    column_mapping:\n      text: ${data.input}\n")
    result = cli("batch-run", "--backend", "azureml", "--dry-run")
    assert result.code == 2, result.err
    assert ("llmops.yaml:4:11: 'ask' is a .prompty file in the prompty 2.x format; Azure ML prompt flow runs read "
            "only prompt flow's prompty format") in result.err
    assert ("'support' runs on the mlflow_agent engine, which --backend azureml does not have; run it with "
            "--backend local") in result.err
    assert result.out == ""
