"""The Azure Pipelines template (azure-pipelines-template.yml): its parameters, its safety rules, and its run script,
executed with bash the way the agent would run it (offline: a fake Azure DevOps server, the example's cassettes)."""

from __future__ import annotations

import io
import os
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
from llmops_ci.ci.hosts import AzureDevOps
from tests.fake_ado import FakeAzureDevOps
from tests.fake_openai import FakeOpenAI

ROOT = Path(__file__).parent.parent
TEMPLATE = ROOT / "azure-pipelines-template.yml"
DOCS = ROOT / "docs" / "azure-pipelines.md"
EXAMPLE = ROOT / "examples" / "web-classification"
SCRIPT_KEYS = ("script", "bash", "inlineScript", "powershell", "pwsh")
PR = 17


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    data = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def params(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in template["parameters"]}


def walk_steps(items: list[Any]) -> Iterator[dict[str, Any]]:
    """Every step, including those under ``${{ if }}`` / ``${{ else }}`` branches."""
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


def steps(template: dict[str, Any]) -> list[dict[str, Any]]:
    return list(walk_steps(job(template)["steps"]))


def run_steps(template: dict[str, Any]) -> list[dict[str, Any]]:
    """The llmops-ci run step, once per backend variant (AzureCLI@2 for azureml, bash otherwise)."""
    found = [s for s in steps(template) if s.get("name") == "llmops"]
    assert len(found) == 2
    return found


def script_of(step: dict[str, Any]) -> str:
    return step.get("bash") or step["inputs"]["inlineScript"]


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

def test_parameters_are_typed_documented_and_used(template: dict[str, Any]) -> None:
    declared = params(template)
    assert {"steps", "config", "flows", "workingDirectory", "pythonVersion", "backend", "azureServiceConnection",
            "baseline", "defaultBranch", "extras", "comment", "llmCache", "pool"} <= set(declared)
    assert all("type" in p and "default" in p for p in declared.values())
    assert declared["steps"]["default"] == "pr" and declared["config"]["default"] == "llmops.yaml"
    assert declared["flows"]["type"] == "object" and declared["flows"]["default"] == []
    assert declared["backend"]["values"] == ["local", "azureml"] and declared["backend"]["default"] == "local"
    assert declared["baseline"]["default"] == "auto" and declared["comment"]["default"] is True
    assert declared["pool"]["default"] == {"vmImage": "ubuntu-latest"}
    assert declared["defaultBranch"]["default"] == "refs/heads/main"

    body = "\n".join(all_strings({k: v for k, v in template.items() if k != "parameters"}))
    used = set(re.findall(r"parameters\.([A-Za-z_][A-Za-z0-9_]*)", body))
    assert used == set(declared), (used ^ set(declared))

    documented = documented_parameters()
    assert set(declared) <= set(documented), set(declared) - set(documented)
    assert set(documented) <= set(declared), set(documented) - set(declared)
    for name, row in documented.items():
        cells = [c.strip() for c in row.split("|")]
        assert len([c for c in cells if c]) >= 3, f"{name}: type, default and description expected"


def test_docs_have_outputs_and_permission() -> None:
    text = DOCS.read_text(encoding="utf-8")
    outputs = re.search(r"^## Outputs\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert outputs and all(f"`{name}`" in outputs.group(1) for name in ("passed", "summary", "commentUrl"))
    assert "Contribute to pull requests" in text and "repository: llmops" in text
    assert "AzureML Data Scientist" in text and "latestFromBranch" in text


def test_no_parameter_expression_in_script_text(template: dict[str, Any]) -> None:
    texts = list(scripts(template))
    assert len(texts) >= 5
    for text in texts:
        assert "${{" not in text, text
        assert "parameters." not in text, text


def test_access_token_is_mapped_for_the_run(template: dict[str, Any]) -> None:
    for step in run_steps(template):
        assert step["env"]["SYSTEM_ACCESSTOKEN"] == "$(System.AccessToken)"
    assert "System.AccessToken" not in "\n".join(scripts(template))


def test_both_backends_run_the_same_script(template: dict[str, Any]) -> None:
    cli, plain = run_steps(template)
    assert cli["task"] == "AzureCLI@2" and "bash" in plain
    assert cli["inputs"]["azureSubscription"] == "${{ parameters.azureServiceConnection }}"
    assert cli["inputs"]["scriptType"] == "bash" and cli["inputs"]["scriptLocation"] == "inlineScript"
    assert script_of(cli) == script_of(plain)
    assert cli["env"] == plain["env"]
    assert cli["inputs"]["workingDirectory"] == plain["workingDirectory"] == "$(LLMOPS_WORKDIR)"
    branches = [k for item in job(template)["steps"] if isinstance(item, dict) for k in item]
    assert "${{ if eq(parameters.backend, 'azureml') }}" in branches and "${{ else }}" in branches


def test_checkouts_python_and_install(template: dict[str, Any]) -> None:
    all_steps = steps(template)
    checkouts = {s["checkout"]: s.get("path") for s in all_steps if "checkout" in s}
    assert checkouts == {"self": "s/self", "llmops": "s/llmops-ci"}
    assert job(template)["pool"] == "${{ parameters.pool }}"
    python = next(s for s in all_steps if s.get("task") == "UsePythonVersion@0")
    assert python["inputs"]["versionSpec"] == "${{ parameters.pythonVersion }}"
    install = next(s for s in all_steps if s.get("displayName") == "Install llmops-ci")
    assert install["env"]["LLMOPS_SOURCE"] == "$(Pipeline.Workspace)/s/llmops-ci"
    assert job(template)["variables"]["LLMOPS_WORKDIR"].startswith("$(Pipeline.Workspace)/s/self/")


def test_baseline_download_and_publish(template: dict[str, Any]) -> None:
    all_steps = steps(template)
    download = next(s for s in all_steps if s.get("task") == "DownloadPipelineArtifact@2")
    inputs = download["inputs"]
    assert inputs["source"] == "specific" and inputs["runVersion"] == "latestFromBranch"
    assert inputs["project"] == "$(System.TeamProjectId)" and inputs["pipeline"] == "$(System.DefinitionId)"
    assert inputs["artifact"] == "llmops-baseline"
    assert download["continueOnError"] is True
    assert "eq(variables['Build.Reason'], 'PullRequest')" in download["condition"]
    # the target branch, normalised to refs/heads/... (GitHub repos give just the name)
    branch = re.fullmatch(r"\$\((\w+)\)", inputs["runBranch"])
    assert branch, inputs["runBranch"]
    setter = next(s for s in all_steps if f"variable={branch.group(1)}]" in s.get("bash", ""))
    assert "$(System.PullRequest.TargetBranch)" in setter["env"].values()
    assert "eq(variables['Build.Reason'], 'PullRequest')" in setter["condition"]
    for step in run_steps(template):
        assert step["env"]["${{ if eq(parameters.baseline, 'auto') }}"]["LLMOPS_BASELINE_DIR"] == \
            inputs["path"]

    publishes = {s["inputs"]["artifact"]: s for s in all_steps if s.get("task") == "PublishPipelineArtifact@1"}
    assert set(publishes) == {"llmops-results-$(System.JobAttempt)", "llmops-baseline"}
    assert publishes["llmops-results-$(System.JobAttempt)"]["condition"] == "always()"
    assert publishes["llmops-results-$(System.JobAttempt)"]["inputs"]["targetPath"] == "$(LLMOPS_STATE_DIR)"
    prepare = next(s for s in all_steps if s.get("displayName") == "Prepare the baseline")
    assert "variables['Build.SourceBranch']" in prepare["condition"]
    assert "variables['LLMOPS_DEFAULT_BRANCH']" in prepare["condition"]
    assert job(template)["variables"]["LLMOPS_DEFAULT_BRANCH"] == "${{ parameters.defaultBranch }}"
    assert prepare["env"]["LLMOPS_BASELINE_OUT"] == publishes["llmops-baseline"]["inputs"]["targetPath"]


def test_azureml_without_service_connection_fails_early(template: dict[str, Any]) -> None:
    key = "${{ if and(eq(parameters.backend, 'azureml'), eq(parameters.azureServiceConnection, '')) }}"
    guard = next(item[key] for item in job(template)["steps"] if isinstance(item, dict) and key in item)
    assert "exit 2" in guard[0]["bash"]


# --- running the template's script ------------------------------------------------------------------------------

def _condition(expr: str, values: dict[str, Any]) -> bool:
    m = re.fullmatch(r"\$\{\{ if (eq|ne)\(parameters\.(\w+), '([^']*)'\) \}\}", expr)
    assert m, f"the test's evaluator does not know {expr!r}"
    equal = str(values[m.group(2)]) == m.group(3)
    return equal if m.group(1) == "eq" else not equal


def _expression(expr: str, values: dict[str, Any]) -> str:
    expr = expr.strip()
    if m := re.fullmatch(r"parameters\.(\w+)", expr):
        value = values[m.group(1)]
        return str(value)  # booleans render as True/False, as in Azure Pipelines
    if m := re.fullmatch(r"join\('([^']*)', parameters\.(\w+)\)", expr):
        value = values[m.group(2)]
        return m.group(1).join(value) if isinstance(value, list) else str(value)
    raise AssertionError(f"the test's evaluator does not know ${{{{ {expr} }}}}")


def resolve(value: str, values: dict[str, Any], macros: dict[str, str]) -> str:
    """``${{ }}`` template expressions, then ``$(Name)`` macros (repeatedly, as variables may nest)."""
    text = re.sub(r"\$\{\{(.*?)\}\}", lambda m: _expression(m.group(1), values), value)
    for _ in range(5):
        text = re.sub(r"\$\(([A-Za-z0-9_.]+)\)", lambda m: macros.get(m.group(1), m.group(0)), text)
    assert "${{" not in text and not re.search(r"\$\([A-Za-z0-9_.]+\)", text), text
    return text


def step_env(env: dict[str, Any], values: dict[str, Any], macros: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in env.items():
        if key.startswith("${{ each "):
            assert key == "${{ each pair in parameters.env }}"
            for k, v in values["env"].items():
                out[k] = resolve(str(v), values, macros)
        elif key.startswith("${{ if "):
            if _condition(key, values):
                out.update(step_env(value, values, macros))
        else:
            out[key] = resolve(str(value), values, macros)
    return out


class Agent:
    """What the agent provides: a workspace, predefined variables, job variables mapped to env."""

    def __init__(self, template: dict[str, Any], workspace: Path, parameters: dict[str, Any],
                 predefined: dict[str, str]) -> None:
        self.template = template
        self.values = {name: p["default"] for name, p in params(template).items()} | parameters
        self.workspace = workspace
        self.macros = {"Pipeline.Workspace": str(workspace), **predefined}
        for name, value in job(template)["variables"].items():
            self.macros[name] = resolve(str(value), self.values, self.macros)
        self.predefined = predefined

    def env(self, step: dict[str, Any], extra_env: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SYSTEM_", "BUILD_", "LLMOPS_", "GITHUB_", "OPENAI_")) and k != "TF_BUILD"}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["TF_BUILD"] = "True"
        env.update({k.upper().replace(".", "_"): v for k, v in self.predefined.items() if k != "System.AccessToken"})
        env.update({k: v for k, v in self.macros.items() if k.startswith("LLMOPS_")})  # job variables
        env.update(step_env(step.get("env", {}), self.values, self.macros))
        env.update(extra_env or {})
        return env

    def cwd(self, step: dict[str, Any]) -> str:
        return resolve(step.get("workingDirectory") or step.get("inputs", {}).get("workingDirectory", "."),
                       self.values, self.macros)

    def run(self, step: dict[str, Any], extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        env, cwd = self.env(step, extra_env), self.cwd(step)
        script = self.workspace / "_temp" / "step.sh"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(resolve(script_of(step), self.values, self.macros), encoding="utf-8")
        return subprocess.run(["bash", "--noprofile", "--norc", str(script)], cwd=cwd, env=env, text=True,
                              capture_output=True, timeout=600)


def plain_run_step(template: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in run_steps(template) if "bash" in s)


def has_pr_step() -> bool:
    out = subprocess.run([sys.executable, "-m", "llmops_ci", "--help"], capture_output=True, text=True, cwd=ROOT)
    return re.search(r"^\s+pr\s", out.stdout, re.M) is not None


@pytest.mark.executor
def test_run_script_on_a_fake_azure_devops(template: dict[str, Any], tmp_path: Path) -> None:
    """The run step's script, as the agent would run it on a PR build: lint (and pr) on the example, offline."""
    assert sys.prefix != sys.base_prefix, "the tests run from a venv that has llmops-ci installed"
    workspace = tmp_path / "w"
    shutil.copytree(EXAMPLE, workspace / "s" / "self", ignore=shutil.ignore_patterns(".llmops", "__pycache__"))
    (workspace / "llmops-venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    step_names = "lint pr" if has_pr_step() else "lint"
    openai = FakeOpenAI().start()
    try:
        with FakeAzureDevOps() as ado:
            agent = Agent(template, workspace, {
                "steps": step_names, "flows": ["classify"],
                "env": {"OPENAI_BASE_URL": openai.url + "/v1"},  # reachable, yet the cassettes answer every call
            }, {
                "System.AccessToken": ado.token, "System.CollectionUri": ado.url,
                "System.TeamProjectId": ado.project_id, "Build.Repository.Id": ado.repository_id,
                "System.PullRequest.PullRequestId": str(PR), "Build.Reason": "PullRequest",
                "Build.Repository.Provider": "TfsGit", "System.PullRequest.TargetBranch": "refs/heads/main",
            })
            result = agent.run(plain_run_step(template))
            output = result.stdout + result.stderr
            assert result.returncode == 0, output
            assert "##vso[task.setvariable variable=passed;isOutput=true]true" in result.stdout
            assert "##vso[task.uploadsummary]" in result.stdout
            threads = ado.threads.get(PR, [])
            assert len(threads) == 1, output
            content = threads[0]["comments"][0]["content"]
            assert "llmops-ci" in content and "classify" in content
            assert threads[0].get("status") == "fixed"
            assert all(r.headers.get("authorization") == f"Bearer {ado.token}" for r in ado.requests)
            assert ado.token not in output
            assert openai.requests == []
    finally:
        openai.stop()
    state = workspace / "s" / "self" / ".llmops"
    assert (state / "summary.json").is_file()
    if step_names == "lint pr":
        assert "llmops-ci pr --config llmops.yaml" in result.stdout


# --- the run's argument handling: the run step's environment, as the agent builds it, given to llmops_ci.ci ------
# with a stand-in for llmops-ci itself that records each command line and fails the step named in ``fail``


@pytest.fixture
def fake(template: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    workspace = tmp_path / "w"
    (workspace / "s" / "self").mkdir(parents=True)

    def run(parameters: dict[str, Any], baseline: bool = False, fail: str = "", provider: str = "TfsGit",
            predefined: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
        if baseline:
            (workspace / "llmops-baseline").mkdir(exist_ok=True)
            (workspace / "llmops-baseline" / "summary.json").write_text("{}", encoding="utf-8")
        agent = Agent(template, workspace, parameters, {
            "System.AccessToken": "t", "Build.Reason": "PullRequest", "Build.Repository.Provider": provider,
            **(predefined or {})})
        step = plain_run_step(template)
        assert script_of(step).strip().endswith('"$py" -P -m llmops_ci.ci run')
        calls: list[list[str]] = []

        def llmops_ci(argv: list[str]) -> int:
            calls.append(argv)
            return 1 if argv[0] == fail else 0

        env = agent.env(step)
        monkeypatch.chdir(agent.cwd(step))
        out = io.StringIO()
        code = dispatch("run", env, AzureDevOps(env, out), call=llmops_ci)
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
    assert _opt(calls[0], "--baseline") == [] and _opt(calls[0], "--comment") == []
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


@pytest.mark.parametrize("bad", ["lint; touch pwned", "lint $(touch pwned)", "--help", "", "lint `id`"])
def test_bad_steps_are_refused_before_anything_runs(fake: Any, tmp_path: Path, bad: str) -> None:
    result, calls = fake({"steps": bad})
    assert result.returncode == 2 and calls == []
    assert "##vso[task.logissue type=error]steps:" in result.stdout
    assert not list(tmp_path.rglob("pwned"))


def test_changed_since_reaches_the_run_steps_and_fetches_the_history(template: dict[str, Any], fake: Any,
                                                                      tmp_path: Path) -> None:
    self_checkout = next(s for s in steps(template) if s.get("checkout") == "self")
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


def example_agent(template: dict[str, Any], tmp_path: Path, parameters: dict[str, Any],
                  predefined: dict[str, str]) -> Agent:
    workspace = tmp_path / "w"
    shutil.copytree(EXAMPLE, workspace / "s" / "self", ignore=shutil.ignore_patterns(".llmops", "__pycache__"))
    (workspace / "llmops-venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return Agent(template, workspace, parameters, {"System.AccessToken": "t", **predefined})


def test_the_run_script_stops_at_the_first_failing_step(template: dict[str, Any], tmp_path: Path) -> None:
    agent = example_agent(template, tmp_path, {"steps": "lint gate register", "config": "missing.yaml"},
                          {"Build.Reason": "IndividualCI"})
    result = agent.run(plain_run_step(template))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "llmops-ci lint --config missing.yaml" in result.stdout
    assert "llmops-ci gate" not in result.stdout and "llmops-ci register" not in result.stdout
    assert "##vso[task.setvariable variable=passed;isOutput=true]false" in result.stdout
    assert "##vso[task.setvariable variable=LLMOPS_EXIT_CODE]2" in result.stdout


@pytest.mark.parametrize(("exit_code", "kept"), [("0", True), ("1", True), ("3", False), ("4", False),
                                                 ("130", False), ("143", False)])
def test_the_baseline_step_publishes_only_complete_results(template: dict[str, Any], tmp_path: Path,
                                                           exit_code: str, kept: bool) -> None:
    agent = example_agent(template, tmp_path, {}, {"Build.Reason": "IndividualCI",
                                                   "Build.SourceBranch": "refs/heads/main",
                                                   "LLMOPS_EXIT_CODE": exit_code})
    state = Path(agent.macros["LLMOPS_STATE_DIR"])
    (state / "runs" / "classify").mkdir(parents=True)
    (state / "runs" / "classify" / "lines.jsonl").write_text("{}\n", encoding="utf-8")
    (state / "pf-home").mkdir()
    (state / "summary.json").write_text('{"schema": "llmops-ci/summary@1", "flows": {}}', encoding="utf-8")
    prepare = next(s for s in steps(template) if s.get("displayName") == "Prepare the baseline")
    assert prepare["condition"].startswith("and(succeededOrFailed(),")  # a failed gate on main is still a baseline
    result = agent.run(prepare)
    assert result.returncode == 0, result.stdout + result.stderr
    out = Path(agent.macros["Pipeline.Workspace"]) / "llmops-baseline-out"
    assert f"##vso[task.setvariable variable=LLMOPS_BASELINE_READY]{str(kept).lower()}" in result.stdout
    assert (out / "summary.json").is_file() is kept
    if kept:
        assert (out / "runs" / "classify" / "lines.jsonl").is_file() and not (out / "pf-home").exists()
    publish = next(s for s in steps(template) if s.get("task") == "PublishPipelineArtifact@1"
                   and s["inputs"]["artifact"] == "llmops-baseline")
    assert publish["condition"] == "and(succeededOrFailed(), eq(variables['LLMOPS_BASELINE_READY'], 'true'))"
