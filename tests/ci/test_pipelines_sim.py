"""Both Azure Pipelines templates expanded and run step by step (tests/ci/azure_sim.py) through a push to main, a
PR, a schedule, a manual run, a failed main build and its "Rerun failed jobs", and Azure DevOps Server; the
baseline each build publishes or downloads, the output variables, and which step holds System.AccessToken."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ci import azure_sim as az
from tests.fakes.ado import FakeAzureDevOps

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "web-classification"
PR = 31


@pytest.fixture
def org(tmp_path: Path) -> az.Organisation:
    return az.Organisation(tmp_path / "org")


def workspace_for(tmp_path: Path, label: str, broken: bool = False) -> Path:
    workspace = tmp_path / label
    shutil.copytree(EXAMPLE, workspace / "s" / "self", ignore=shutil.ignore_patterns(".llmops", "__pycache__"))
    (workspace / "s" / "llmops-ci").symlink_to(ROOT, target_is_directory=True)
    if broken:  # a lint error: exit 1, a check failed; the build fails
        dag = workspace / "s" / "self" / "flows" / "classify" / "flow.dag.yaml"
        dag.write_text(dag.read_text().replace("${classify_with_llm.output}", "${no_such_node.output}"))
    return workspace


def run_build(org: az.Organisation, tmp_path: Path, branch: str, reason: str, parameters: dict[str, Any] | None = None,
              predefined: dict[str, str] | None = None, broken: bool = False,
              build: az.Build | None = None) -> az.JobRun:
    build = build or org.new_build(branch, reason)
    workspace = workspace_for(tmp_path, f"build{build.id}-attempt{build.attempt}", broken)
    steps = az.job_steps(az.expand_pipeline({"steps": "lint", "comment": False, **(parameters or {})}))
    extra = {"System.PullRequest.TargetBranch": "refs/heads/main",
             "System.PullRequest.PullRequestId": str(PR)} if reason == "PullRequest" else {}
    agent = az.Agent(org, build, workspace, {**extra, **(predefined or {})})
    return agent.run(steps)


def baselines(build: az.Build) -> list[str]:
    return sorted(name for name in build.artifacts if name.startswith("llmops-baseline"))


@pytest.mark.parametrize("reason", ["IndividualCI", "Schedule", "Manual"])
def test_every_default_branch_build_publishes_its_baseline(org: az.Organisation, tmp_path: Path, reason: str) -> None:
    job = run_build(org, tmp_path, "refs/heads/main", reason)
    assert job.build.result == "succeeded", job.log
    assert baselines(job.build) == ["llmops-baseline-1"]
    assert sorted(job.build.artifacts) == ["llmops-baseline-1", "llmops-results-1"]
    assert job.outputs["llmops.passed"] == "true" and job.outputs["llmops.exitCode"] == "0"


def test_a_pr_gets_the_baseline_of_its_target_branch(org: az.Organisation, tmp_path: Path) -> None:
    run_build(org, tmp_path, "refs/heads/main", "IndividualCI")
    pr = run_build(org, tmp_path, "refs/pull/31/merge", "PullRequest")
    assert pr.build.result == "succeeded", pr.log
    assert "baseline: the target branch's results" in pr.step("llmops-ci lint").log
    assert "llmops-baseline/llmops-baseline-1" in pr.step("llmops-ci lint").log
    assert baselines(pr.build) == []  # a PR never publishes one


def test_the_first_pr_runs_without_a_baseline(org: az.Organisation, tmp_path: Path) -> None:
    pr = run_build(org, tmp_path, "refs/pull/31/merge", "PullRequest")
    assert pr.build.result == "partiallySucceeded", pr.log  # the download found nothing (continueOnError)
    assert "no such" not in pr.log and pr.outputs["llmops.passed"] == "true"


def test_a_failed_main_build_is_the_baseline_and_its_rerun_passes(org: az.Organisation, tmp_path: Path) -> None:
    failed = run_build(org, tmp_path, "refs/heads/main", "IndividualCI", broken=True)
    assert failed.build.result == "failed", failed.log
    assert failed.outputs["llmops.passed"] == "false" and failed.outputs["llmops.exitCode"] == "1"
    assert baselines(failed.build) == ["llmops-baseline-1"]  # exit 1 is a complete result: kept
    pr = run_build(org, tmp_path, "refs/pull/31/merge", "PullRequest")
    assert "llmops-baseline/llmops-baseline-1" in pr.step("llmops-ci lint").log, pr.log  # allowFailedBuilds
    # "Rerun failed jobs": the same build, attempt 2, artifacts of attempt 1 still there
    failed.build.attempt = 2
    rerun = run_build(org, tmp_path, "refs/heads/main", "IndividualCI", build=failed.build, broken=True)
    assert [s.display for s in rerun.steps if s.result == "failed"] == ["llmops-ci lint"], rerun.log
    assert baselines(failed.build) == ["llmops-baseline-1", "llmops-baseline-2"]
    pr = run_build(org, tmp_path, "refs/pull/31/merge", "PullRequest")
    assert "llmops-baseline/llmops-baseline-2" in pr.step("llmops-ci lint").log, pr.log  # the latest attempt


def test_a_fixed_artifact_name_fails_on_rerun(org: az.Organisation, tmp_path: Path) -> None:
    """The rule the simulation enforces (what the old `llmops-baseline` name hit)."""
    build = org.new_build("refs/heads/main", "IndividualCI")
    agent = az.Agent(org, build, tmp_path, {})
    (tmp_path / "x").mkdir()
    agent.publish("PublishPipelineArtifact@1", {"artifact": "llmops-baseline", "targetPath": str(tmp_path / "x")})
    with pytest.raises(az.TaskFailed, match="Artifact llmops-baseline already exists for build 1"):
        agent.publish("PublishPipelineArtifact@1", {"artifact": "llmops-baseline", "targetPath": str(tmp_path / "x")})


def test_other_branches_publish_no_baseline(org: az.Organisation, tmp_path: Path) -> None:
    job = run_build(org, tmp_path, "refs/heads/feature", "IndividualCI")
    assert job.build.result == "succeeded", job.log
    assert baselines(job.build) == []


def test_azure_devops_server_uses_build_artifacts(tmp_path: Path) -> None:
    org = az.Organisation(tmp_path / "org", server=True)
    server = {"System.CollectionUri": "https://tfs.contoso.local/DefaultCollection/"}
    # pipeline artifacts (the default) on Server: a warning that names the fix, and no baseline ever
    job = run_build(org, tmp_path, "refs/heads/main", "IndividualCI", predefined=server)
    assert "cannot download pipeline artifacts (OnPremIsNotSupported)" in job.log
    assert "artifacts: build" in job.log
    # artifacts: build works end to end
    params = {"artifacts": "build"}
    main = run_build(org, tmp_path, "refs/heads/main", "IndividualCI", params, predefined=server)
    assert main.build.result == "succeeded", main.log
    assert baselines(main.build) == ["llmops-baseline-1"] and main.build.kind["llmops-baseline-1"] == "build"
    pr = run_build(org, tmp_path, "refs/pull/31/merge", "PullRequest", params, predefined=server)
    assert pr.build.result == "succeeded", pr.log
    assert "llmops-baseline/llmops-baseline-1" in pr.step("llmops-ci lint").log


def test_the_venv_is_cached_by_a_normalised_key(org: az.Organisation, tmp_path: Path) -> None:
    first = run_build(org, tmp_path, "refs/heads/feature", "IndividualCI", {"extras": "MLflow, azure"})
    assert first.step("Restore the llmops-ci venv").log.startswith("Cache miss"), first.log
    assert list(org.caches) and "azure,mlflow-" in next(iter(org.caches))
    second = run_build(org, tmp_path, "refs/heads/feature", "IndividualCI", {"extras": "azure,mlflow"})
    assert second.step("Restore the llmops-ci venv").log.startswith("Cache hit"), second.log


@pytest.fixture
def ado() -> Iterator[FakeAzureDevOps]:
    with FakeAzureDevOps() as server:
        yield server


def test_only_the_publish_step_holds_the_token_and_it_writes_the_thread(org: az.Organisation, tmp_path: Path,
                                                                       ado: FakeAzureDevOps) -> None:
    predefined = {"System.AccessToken": ado.token, "System.CollectionUri": ado.url,
                  "System.TeamProjectId": ado.project_id, "Build.Repository.Id": ado.repository_id}
    job = run_build(org, tmp_path, "refs/pull/31/merge", "PullRequest", {"comment": True}, predefined)
    assert job.outputs["llmops.passed"] == "true", job.log
    holders = [s.display for s in job.steps if s.ran and ado.token in s.env.values()]
    assert holders == ["Publish the results"]
    assert "SYSTEM_ACCESSTOKEN" not in job.step("llmops-ci lint").env
    assert len(ado.threads.get(PR, [])) == 1
    assert job.outputs["llmops.commentUrl"]


def test_outputs_are_set_when_the_install_fails(org: az.Organisation, tmp_path: Path) -> None:
    build = org.new_build("refs/heads/main", "IndividualCI")
    workspace = workspace_for(tmp_path, "broken-install")
    steps = az.job_steps(az.expand_pipeline({"steps": "lint", "comment": False}))
    agent = az.Agent(org, build, workspace, {})

    def failing_install(step: dict[str, Any]) -> str:
        raise az.TaskFailed("pip: no matching distribution")

    agent.install = failing_install  # type: ignore[method-assign]
    job = agent.run(steps)
    assert job.build.result == "failed"
    assert job.step("Publish the results").result == "succeeded", job.log
    assert job.outputs["llmops.passed"] == "false"
    assert baselines(job.build) == []


def test_azureml_keeps_the_session_alive_and_runs_the_same_script() -> None:
    steps = az.job_steps(az.expand_pipeline({"backend": "azureml", "azureServiceConnection": "conn"}))
    cli = next(s for s in steps if s.get("task") == "AzureCLI@2")
    assert cli["inputs"]["keepAzSessionActive"] is True
    assert cli["name"] == "llmopsRun" and "SYSTEM_ACCESSTOKEN" not in cli["env"]
    plain = next(s for s in az.job_steps(az.expand_pipeline({})) if s.get("name") == "llmopsRun")
    assert cli["inputs"]["inlineScript"] == plain["bash"]
    assert cli["env"] == plain["env"] | {"LLMOPS_BACKEND": "azureml"}


def test_azureml_without_a_service_connection_stops_first() -> None:
    steps = az.job_steps(az.expand_pipeline({"backend": "azureml"}))
    assert steps[2]["displayName"] == "Check the parameters" and "exit 2" in steps[2]["bash"]


def test_the_steps_template_alone_in_a_users_job() -> None:
    """The steps template dropped into a pipeline of the user's own (self checked out where they choose)."""
    steps = az.expand_file(az.STEPS, {"steps": "pr", "repositoryPath": "$(Build.SourcesDirectory)",
                                      "flows": ["classify"], "env": {"OPENAI_API_KEY": "$(OPENAI_API_KEY)"}})["steps"]
    run = next(s for s in steps if s.get("name") == "llmopsRun")
    assert run["workingDirectory"] == "$(Build.SourcesDirectory)/."
    assert run["env"]["OPENAI_API_KEY"] == "$(OPENAI_API_KEY)" and run["env"]["LLMOPS_FLOWS"] == "classify"
    publish = next(s for s in steps if s.get("name") == "llmops")
    assert publish["env"]["SYSTEM_ACCESSTOKEN"] == "$(System.AccessToken)" and "OPENAI_API_KEY" not in publish["env"]
    with pytest.raises(az.TemplateError, match="not one of"):
        az.expand_file(az.STEPS, {"artifacts": "ftp"})


def test_a_fork_pr_of_a_github_repository_runs_and_writes_no_thread(org: az.Organisation, tmp_path: Path,
                                                                    ado: FakeAzureDevOps) -> None:
    """A GitHub repository built by Azure Pipelines: PRs from forks get no secrets; no Azure Repos thread exists."""
    run_build(org, tmp_path, "refs/heads/main", "IndividualCI")
    predefined = {"System.AccessToken": ado.token, "System.CollectionUri": ado.url,
                  "Build.Repository.Provider": "GitHub", "System.PullRequest.IsFork": "True",
                  "System.PullRequest.TargetBranch": "main"}  # GitHub repositories give the bare name
    job = run_build(org, tmp_path, "refs/pull/31/merge", "PullRequest", {"comment": True}, predefined)
    assert job.build.result == "succeeded", job.log
    assert "llmops-baseline/llmops-baseline-1" in job.step("llmops-ci lint").log
    assert "only Azure Repos pull requests get one" in job.step("Publish the results").log
    assert ado.requests == [] and job.outputs["llmops.passed"] == "true"
