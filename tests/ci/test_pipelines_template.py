"""The Azure Pipelines templates (azure-pipelines-template.yml, which extends into azure-pipelines-steps.yml): their
parameters, their safety rules, and their scripts run with bash the way the agent would run them (offline: a fake
Azure DevOps server, the example's cassettes). Templates are expanded and run by tests/ci/azure_sim.py; the whole
job through builds and events is in tests/ci/test_pipelines_sim.py."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops_ci.ci import dispatch
from llmops_ci.platforms.azure_devops import AzureDevOpsHost
from tests.ci import azure_sim as az
from tests.fakes.ado import FakeAzureDevOps
from tests.fakes.openai import FakeOpenAI

ROOT = Path(__file__).parents[2]
TEMPLATE = ROOT / "azure-pipelines-template.yml"
STEPS_TEMPLATE = ROOT / "azure-pipelines-steps.yml"
DOCS = ROOT / "docs" / "azure-pipelines.md"
EXAMPLE = ROOT / "examples" / "web-classification"
SCRIPT_KEYS = ("script", "bash", "inlineScript", "powershell", "pwsh")
PR = 17


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    data = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def steps_template() -> dict[str, Any]:
    data = yaml.safe_load(STEPS_TEMPLATE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def params(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in template["parameters"]}


def walk_steps(items: list[Any]) -> Iterator[dict[str, Any]]:
    """Every step, including those under ``${{ if }}`` / ``${{ else }}`` branches (not expanded)."""
    for item in items:
        if not isinstance(item, dict):
            continue
        if len(item) == 1 and next(iter(item)).startswith("${{"):
            yield from walk_steps(next(iter(item.values())))
        else:
            yield item


def job(template: dict[str, Any]) -> dict[str, Any]:
    stages = template["stages"]
    assert [s["stage"] for s in stages] == ["llmops"]
    jobs = stages[0]["jobs"]
    assert [j["job"] for j in jobs] == ["llmops"]
    return jobs[0]


def raw_steps(steps_template: dict[str, Any]) -> list[dict[str, Any]]:
    return list(walk_steps(steps_template["steps"]))


def expanded(parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return az.job_steps(az.expand_pipeline(parameters or {}))


def run_step(parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    return next(s for s in expanded(parameters) if s.get("name") == "llmopsRun")


def all_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from all_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from all_strings(value)
    elif node is not None:
        yield str(node)


def scripts(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SCRIPT_KEYS and isinstance(value, str):
                yield value
            yield from scripts(value)
    elif isinstance(node, list):
        for value in node:
            yield from scripts(value)


def documented_parameters() -> dict[str, str]:
    text = DOCS.read_text(encoding="utf-8")
    section = re.search(r"^## Parameters\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, "docs/azure-pipelines.md has no '## Parameters' section"
    rows = re.findall(r"^\|\s*`([A-Za-z_][A-Za-z0-9_]*)`\s*\|([^\n]*)$", section.group(1), re.M)
    return {name: rest for name, rest in rows}


# --- static checks ---------------------------------------------------------------------------------------------------

def test_parameters_are_typed_documented_and_used(template: dict[str, Any], steps_template: dict[str, Any]) -> None:
    declared = params(template)
    assert {"steps", "config", "flows", "workingDirectory", "pythonVersion", "backend", "azureServiceConnection",
            "baseline", "defaultBranch", "artifacts", "extras", "comment", "llmCache", "pool"} <= set(declared)
    assert all("type" in p and "default" in p for p in declared.values())
    assert declared["steps"]["default"] == "pr" and declared["config"]["default"] == "llmops.yaml"
    assert declared["flows"]["type"] == "object" and declared["flows"]["default"] == []
    assert declared["backend"]["values"] == ["local", "azureml", "databricks"]
    assert declared["backend"]["default"] == "local"
    assert declared["baseline"]["default"] == "auto" and declared["comment"]["default"] is True
    assert declared["pool"]["default"] == {"vmImage": "ubuntu-latest"}
    assert declared["defaultBranch"]["default"] == "refs/heads/main"
    assert declared["artifacts"]["values"] == ["pipeline", "build"]

    # the extends template passes every parameter but pool on to the steps template, with the same type and default
    inner = params(steps_template)
    assert set(declared) - {"pool"} == set(inner) - {"repositoryPath", "llmopsPath"}
    for name in set(declared) - {"pool"}:
        assert {k: v for k, v in declared[name].items()} == inner[name], name
    body = "\n".join(all_strings({k: v for k, v in template.items() if k != "parameters"}))
    used = set(re.findall(r"parameters\.([A-Za-z_][A-Za-z0-9_]*)", body))
    assert used == set(declared), (used ^ set(declared))
    body = "\n".join(all_strings({k: v for k, v in steps_template.items() if k != "parameters"}))
    assert set(re.findall(r"parameters\.([A-Za-z_][A-Za-z0-9_]*)", body)) == set(inner)

    documented = documented_parameters()
    assert set(declared) <= set(documented), set(declared) - set(documented)
    assert set(documented) <= set(declared), set(documented) - set(declared)
    for name, row in documented.items():
        cells = [c.strip() for c in row.split("|")]
        assert len([c for c in cells if c]) >= 3, f"{name}: type, default and description expected"
    text = DOCS.read_text(encoding="utf-8")
    assert "`repositoryPath`" in text and "`llmopsPath`" in text


def test_docs_have_outputs_and_permission() -> None:
    text = DOCS.read_text(encoding="utf-8")
    outputs = re.search(r"^## Outputs\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert outputs and all(f"`{name}`" in outputs.group(1) for name in ("passed", "summary", "commentUrl", "exitCode",
                                                                          "metrics"))
    assert "Contribute to pull requests" in text and "repository: llmops" in text
    assert "AzureML Data Scientist" in text and "latestFromBranch" in text
    assert "OnPremIsNotSupported" in text and "allowFailedBuilds" in text and "keepAzSessionActive" in text


def test_no_parameter_expression_in_script_text(template: dict[str, Any], steps_template: dict[str, Any]) -> None:
    texts = list(scripts(template)) + list(scripts(steps_template))
    assert len(texts) >= 6
    for text in texts:
        assert "${{" not in text, text
        assert "parameters." not in text, text


def test_the_access_token_is_mapped_into_the_publish_step_only(steps_template: dict[str, Any]) -> None:
    holders = [s.get("name") for s in raw_steps(steps_template)
               if any("System.AccessToken" in str(v) for v in (s.get("env") or {}).values())]
    assert holders == ["llmops"]
    publish = next(s for s in raw_steps(steps_template) if s.get("name") == "llmops")
    assert publish["condition"] == "always()"
    assert publish["env"]["SYSTEM_ACCESSTOKEN"] == "$(System.AccessToken)"
    assert "${{ each pair in parameters.env }}" not in publish["env"]  # the LLM keys go to the run only
    assert "System.AccessToken" not in "\n".join(scripts(steps_template))


def test_checkouts_python_and_install(template: dict[str, Any]) -> None:
    all_steps = list(walk_steps(job(template)["steps"]))
    checkouts = {s["checkout"]: s.get("path") for s in all_steps if "checkout" in s}
    assert checkouts == {"self": "s/self", "llmops": "s/llmops-ci"}
    assert job(template)["pool"] == "${{ parameters.pool }}"
    include = next(s for s in all_steps if "template" in s)
    assert include["template"] == "azure-pipelines-steps.yml"
    assert include["parameters"]["repositoryPath"] == "$(Pipeline.Workspace)/s/self"
    assert include["parameters"]["llmopsPath"] == "$(Pipeline.Workspace)/s/llmops-ci"
    steps = expanded({"pythonVersion": "3.12"})
    python = next(s for s in steps if s.get("task") == "UsePythonVersion@0")
    assert python["inputs"]["versionSpec"] == "3.12"
    install = next(s for s in steps if s.get("displayName") == "Install llmops-ci")
    assert install["env"]["LLMOPS_SOURCE"] == "$(Pipeline.Workspace)/s/llmops-ci"
    cache = next(s for s in steps if s.get("task") == "Cache@2")
    assert cache["inputs"]["path"] == install["env"]["LLMOPS_VENV"]
    assert steps.index(cache) < steps.index(install)


def test_baseline_download_and_publish(steps_template: dict[str, Any]) -> None:
    steps = expanded()
    download = next(s for s in steps if s.get("task") == "DownloadPipelineArtifact@2")
    inputs = download["inputs"]
    assert inputs["buildType"] == "specific" and inputs["buildVersionToDownload"] == "latestFromBranch"
    assert inputs["project"] == "$(System.TeamProjectId)" and inputs["definition"] == "$(System.DefinitionId)"
    # the same policy as the action: a failed gate on main is still the baseline
    assert inputs["allowFailedBuilds"] is True and inputs["allowPartiallySucceededBuilds"] is True
    assert inputs["itemPattern"] == "llmops-baseline-*/**"
    assert download["continueOnError"] is True
    assert "eq(variables['Build.Reason'], 'PullRequest')" in download["condition"]
    branch = re.fullmatch(r"\$\((\w+)\)", inputs["branchName"])
    assert branch, inputs["branchName"]
    setter = next(s for s in steps if f"variable={branch.group(1)}]" in s.get("bash", ""))
    assert "$(System.PullRequest.TargetBranch)" in setter["env"].values()
    assert "eq(variables['Build.Reason'], 'PullRequest')" in setter["condition"]
    assert run_step()["env"]["LLMOPS_BASELINE_DIR"] == inputs["targetPath"]
    assert "LLMOPS_BASELINE_DIR" not in run_step({"baseline": "none"})["env"]

    publishes = {s["inputs"]["artifact"]: s for s in steps if s.get("task") == "PublishPipelineArtifact@1"}
    # one name per attempt: "Rerun failed jobs" cannot publish a name twice
    assert set(publishes) == {"llmops-results-$(System.JobAttempt)", "llmops-baseline-$(System.JobAttempt)"}
    assert publishes["llmops-results-$(System.JobAttempt)"]["condition"] == "always()"
    prepare = next(s for s in steps if s.get("displayName") == "Prepare the baseline")
    assert prepare["condition"] == ("and(succeededOrFailed(), ne(variables['Build.Reason'], 'PullRequest'), "
                                    "eq(variables['Build.SourceBranch'], 'refs/heads/main'))")
    assert prepare["env"]["LLMOPS_BASELINE_OUT"] == publishes["llmops-baseline-$(System.JobAttempt)"]["inputs"][
        "targetPath"]
    build = expanded({"artifacts": "build"})
    assert {s.get("task") for s in build} >= {"DownloadBuildArtifacts@1", "PublishBuildArtifacts@1"}
    assert not {s.get("task") for s in build} & {"DownloadPipelineArtifact@2", "PublishPipelineArtifact@1"}


# --- running the template's steps -------------------------------------------------------------------------------


def new_agent(tmp_path: Path, predefined: dict[str, str], branch: str = "refs/pull/17/merge",
              reason: str = "PullRequest") -> az.Agent:
    org = az.Organisation(tmp_path / "org")
    return az.Agent(org, org.new_build(branch, reason), tmp_path / "w", predefined)


def example_workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "w"
    shutil.copytree(EXAMPLE, workspace / "s" / "self", ignore=shutil.ignore_patterns(".llmops", "__pycache__"))
    (workspace / "llmops-venv" / "bin").mkdir(parents=True)
    python = workspace / "llmops-venv" / "bin" / "python"  # the venv's python: this test interpreter
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
    python.chmod(0o755)
    return workspace


def has_pr_step() -> bool:
    out = subprocess.run([sys.executable, "-m", "llmops_ci", "--help"], capture_output=True, text=True, cwd=ROOT)
    return re.search(r"^\s+pr\s", out.stdout, re.M) is not None


@pytest.mark.executor
def test_run_and_publish_on_a_fake_azure_devops(tmp_path: Path) -> None:
    """The run step and the publish step, as the agent would run them on a PR build: lint (and pr) on the example,
    offline; the thread is written by the publish step."""
    assert sys.prefix != sys.base_prefix, "the tests run from a venv that has llmops-ci installed"
    example_workspace(tmp_path)
    step_names = "lint pr" if has_pr_step() else "lint"
    openai = FakeOpenAI().start()
    try:
        with FakeAzureDevOps() as ado:
            steps = expanded({"steps": step_names, "flows": ["classify"],
                              "env": {"OPENAI_BASE_URL": openai.url + "/v1"}})  # the cassettes answer every call
            agent = new_agent(tmp_path, {
                "System.AccessToken": ado.token, "System.CollectionUri": ado.url,
                "System.TeamProjectId": ado.project_id, "Build.Repository.Id": ado.repository_id,
                "System.PullRequest.PullRequestId": str(PR), "System.PullRequest.TargetBranch": "refs/heads/main"})
            run = next(s for s in steps if s.get("name") == "llmopsRun")
            log, _ = agent.script(run, run["bash"], run["workingDirectory"])
            assert "##vso[task.setvariable variable=passed;isOutput=true]true" in log
            assert "##vso[task.uploadsummary]" in log
            assert ado.requests == []  # no token in the run step
            publish = next(s for s in steps if s.get("name") == "llmops")
            output, _ = agent.script(publish, publish["bash"], publish["workingDirectory"])
            threads = ado.threads.get(PR, [])
            assert len(threads) == 1, output
            content = threads[0]["comments"][0]["content"]
            assert "llmops-ci" in content and "classify" in content
            assert threads[0].get("status") == "fixed"
            assert all(r.headers.get("authorization") == f"Bearer {ado.token}" for r in ado.requests)
            assert ado.token not in log + output
            assert "##vso[task.uploadsummary]" not in output  # the run step already did
            assert agent.outputs["llmops.passed"] == "true" and agent.outputs["llmops.commentUrl"]
            assert openai.requests == []
    finally:
        openai.stop()
    if step_names == "lint pr":
        assert "llmops-ci pr --config llmops.yaml" in log


# --- the run's argument handling: the run step's environment, as the agent builds it, given to llmops_ci.ci ------
# with a stand-in for llmops-ci itself that records each command line and fails the step named in ``fail``


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    workspace = tmp_path / "w"
    (workspace / "s" / "self").mkdir(parents=True)

    def run(parameters: dict[str, Any], baseline: bool = False, fail: str = "", provider: str = "TfsGit",
            predefined: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
        if baseline:
            (workspace / "llmops-baseline").mkdir(exist_ok=True)
            (workspace / "llmops-baseline" / "summary.json").write_text("{}", encoding="utf-8")
        agent = new_agent(tmp_path, {"Build.Repository.Provider": provider, **(predefined or {})})
        step = run_step(parameters)
        assert step["bash"].strip().endswith('"$py" -P -m llmops_ci.ci run')
        calls: list[list[str]] = []

        def llmops_ci(argv: list[str]) -> int:
            calls.append(argv)
            return 1 if argv[0] == fail else 0

        env = agent.env_of(step)
        monkeypatch.chdir(agent.macro(step["workingDirectory"]))
        out = io.StringIO()
        code = dispatch("run", env, AzureDevOpsHost(env, out), call=llmops_ci)
        return subprocess.CompletedProcess(["llmops_ci.ci", "run"], code, out.getvalue(), ""), calls

    yield run


def _opt(call: list[str], name: str) -> list[str]:
    """The values of option ``name``, given as ``name VALUE`` or ``name=VALUE``."""
    return [call[i + 1] if arg == name else arg.partition("=")[2] for i, arg in enumerate(call)
            if arg == name or arg.startswith(name + "=")]


def test_arguments_per_step(fake: Any, tmp_path: Path) -> None:
    result, calls = fake({"steps": "batch-run eval-run  gate register", "flows": ["classify", "summarize"],
                          "llmCache": "replay", "comment": False, "config": "cfg dir/llmops.yaml"}, baseline=True)
    assert result.returncode == 0, result.stderr
    assert [c[0] for c in calls] == ["batch-run", "eval-run", "gate", "register"]
    for call in calls:
        assert _opt(call, "--flow") == ["classify", "summarize"]
        assert _opt(call, "--config") == ["cfg dir/llmops.yaml"]
        assert _opt(call, "--comment") == ["off"] and _opt(call, "--backend") == ["local"]
        assert _opt(call, "--state-dir") == [f"{tmp_path}/w/s/self/./.llmops"]
    baseline = str(tmp_path / "w" / "llmops-baseline")
    assert [_opt(c, "--baseline") for c in calls] == [[], [], [baseline], []]
    assert [_opt(c, "--llm-cache") for c in calls] == [["replay"], ["replay"], [], []]


def test_defaults_and_no_baseline_yet(fake: Any) -> None:
    result, calls = fake({})
    assert result.returncode == 0, result.stderr
    assert len(calls) == 1 and calls[0][0] == "pr"
    # the run step never comments (it holds no token): the publish step does
    assert _opt(calls[0], "--baseline") == [] and _opt(calls[0], "--comment") == ["off"]
    assert _opt(calls[0], "--flow") == [] and _opt(calls[0], "--llm-cache") == []
    assert "none found for the target branch" in result.stdout
    _, with_baseline = fake({}, baseline=True)
    assert _opt(with_baseline[0], "--baseline")


def test_github_repository_gets_no_thread(fake: Any) -> None:
    result, calls = fake({}, provider="GitHub")
    assert result.returncode == 0 and _opt(calls[0], "--comment") == ["off"]


def test_stops_at_the_first_failing_step(fake: Any) -> None:
    result, calls = fake({"steps": "batch-run eval-run gate register deploy"}, fail="gate")
    assert result.returncode == 1
    assert [c[0] for c in calls] == ["batch-run", "eval-run", "gate"]


@pytest.mark.parametrize("bad", ["lint; touch pwned", "lint $(touch pwned)", "--help", "lint `id`"])
def test_bad_steps_are_refused_before_anything_runs(fake: Any, tmp_path: Path, bad: str) -> None:
    result, calls = fake({"steps": bad})
    assert result.returncode == 2 and calls == []
    assert "##vso[task.logissue type=error]steps:" in result.stdout
    assert not list(tmp_path.rglob("pwned"))


def test_changed_since_reaches_the_run_steps_and_fetches_the_history(template: dict[str, Any], fake: Any,
                                                                      tmp_path: Path) -> None:
    self_checkout = next(s for s in walk_steps(job(template)["steps"]) if s.get("checkout") == "self")
    assert self_checkout["${{ if ne(parameters.changedSince, '') }}"] == {"fetchDepth": 0}
    result, calls = fake({"steps": "pr batch-run gate", "changedSince": "auto"}, baseline=True,
                         predefined={"System.PullRequest.TargetBranch": "refs/heads/main"})
    assert result.returncode == 0, result.stdout
    assert [_opt(c, "--changed-since") for c in calls] == [["origin/main"], ["origin/main"], []]
    baseline = str(tmp_path / "w" / "llmops-baseline")
    assert [_opt(c, "--baseline") for c in calls] == [[baseline], [baseline], [baseline]]
    _, calls = fake({"steps": "batch-run", "changedSince": "origin/release"})
    assert _opt(calls[0], "--changed-since") == ["origin/release"]


def test_flows_items_may_hold_several_names(fake: Any) -> None:
    _, calls = fake({"steps": "lint", "flows": ["classify", "summarize, rag\nqa"]})
    assert _opt(calls[0], "--flow") == ["classify", "summarize", "rag", "qa"]


def test_the_run_script_stops_at_the_first_failing_step(tmp_path: Path) -> None:
    example_workspace(tmp_path)
    agent = new_agent(tmp_path, {}, "refs/heads/main", "IndividualCI")
    step = run_step({"steps": "lint gate register", "config": "missing.yaml"})
    with pytest.raises(az.TaskFailed) as failed:
        agent.script(step, step["bash"], step["workingDirectory"])
    log = str(failed.value)
    assert "(exit 2)" in log
    assert "llmops-ci lint --config missing.yaml" in log
    assert "llmops-ci gate" not in log and "llmops-ci register" not in log
    assert "##vso[task.setvariable variable=passed;isOutput=true]false" in log
    assert agent.variables["LLMOPS_EXIT_CODE"] == "2"


@pytest.mark.parametrize(("exit_code", "kept"), [("0", True), ("1", True), ("3", False), ("4", False),
                                                 ("130", False), ("143", False)])
def test_the_baseline_step_publishes_only_complete_results(tmp_path: Path, exit_code: str, kept: bool) -> None:
    example_workspace(tmp_path)
    agent = new_agent(tmp_path, {"LLMOPS_EXIT_CODE": exit_code}, "refs/heads/main", "IndividualCI")
    state = tmp_path / "w" / "s" / "self" / ".llmops"
    (state / "runs" / "classify").mkdir(parents=True)
    (state / "runs" / "classify" / "lines.jsonl").write_text("{}\n", encoding="utf-8")
    (state / "pf-home").mkdir()
    (state / "summary.json").write_text('{"schema": "llmops-ci/summary@1", "flows": {}}', encoding="utf-8")
    steps = expanded()
    prepare = next(s for s in steps if s.get("displayName") == "Prepare the baseline")
    assert prepare["condition"].startswith("and(succeededOrFailed(),")  # a failed gate on main is still a baseline
    log, _ = agent.script(prepare, prepare["bash"], None)
    out = tmp_path / "w" / "llmops-baseline-out"
    assert f"##vso[task.setvariable variable=LLMOPS_BASELINE_READY]{str(kept).lower()}" in log
    assert (out / "summary.json").is_file() is kept
    if kept:
        assert (out / "runs" / "classify" / "lines.jsonl").is_file() and not (out / "pf-home").exists()
    publish = next(s for s in steps if s.get("task") == "PublishPipelineArtifact@1"
                   and s["inputs"]["artifact"] == "llmops-baseline-$(System.JobAttempt)")
    assert publish["condition"] == "and(succeededOrFailed(), eq(variables['LLMOPS_BASELINE_READY'], 'true'))"
