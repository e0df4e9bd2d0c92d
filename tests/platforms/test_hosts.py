"""Hosts (llmops_ci.platforms.*Host): events, messages and step outputs of GitHub Actions and Azure Pipelines."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from llmops_ci.platforms import detect_host
from llmops_ci.platforms.azure_devops import AzureDevOpsHost
from llmops_ci.platforms.github import GitHubHost
from llmops_ci.platforms.local import LocalHost


def test_detect_follows_platform_auto() -> None:
    assert isinstance(detect_host({"GITHUB_ACTIONS": "true"}, io.StringIO()), GitHubHost)
    assert isinstance(detect_host({"TF_BUILD": "True"}, io.StringIO()), AzureDevOpsHost)
    assert isinstance(detect_host({}, io.StringIO()), LocalHost)


def test_github_refuses_only_pull_request_target() -> None:
    for event in ("pull_request", "push", "workflow_dispatch", "schedule"):
        assert GitHubHost({"GITHUB_EVENT_NAME": event}, io.StringIO()).refusal() is None
    why = GitHubHost({"GITHUB_EVENT_NAME": "pull_request_target"}, io.StringIO()).refusal()
    assert why and "secrets" in why and "on: pull_request" in why


def test_github_outputs_survive_newlines(tmp_path: Path) -> None:
    path = tmp_path / "out"
    host = GitHubHost({"GITHUB_OUTPUT": str(path)}, io.StringIO())
    host.set_output("summary", "/a/b")
    host.set_output("summary", "line1\nextra=forged")
    lines = path.read_text().splitlines()
    assert lines[0] == "summary=/a/b"
    assert lines[1].startswith("summary<<EOF_") and lines[4] == lines[1].partition("<<")[2]
    assert lines[2:4] == ["line1", "extra=forged"]  # inside the heredoc: a value, not an output of its own


def test_github_published_passed_reads_only_this_run(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_text("passed=true\n")  # an earlier step's
    host = GitHubHost({"GITHUB_OUTPUT": str(path)}, io.StringIO())
    assert not host.published_passed()
    with path.open("a") as fh:
        fh.write("passed=false\n")
    assert host.published_passed()


def test_messages_are_escaped_per_host() -> None:
    out = io.StringIO()
    GitHubHost({}, out).message("warning", "a\n::error::b 100%")
    assert out.getvalue() == "::warning title=llmops-ci::a%0A::error::b 100%25\n"
    out = io.StringIO()
    AzureDevOpsHost({}, out).message("error", "x]\n##vso[task.complete result=Succeeded]")
    assert out.getvalue().count("\n") == 1 and out.getvalue().count("##vso[") == 1
    out = io.StringIO()
    AzureDevOpsHost({}, out).message("info", "##vso[task.complete]")
    assert "##vso[" not in out.getvalue()


def test_azure_outputs() -> None:
    out = io.StringIO()
    host = AzureDevOpsHost({}, out)
    host.set_output("passed", "true")
    host.set_output("baseline-ready", "true")
    assert out.getvalue().splitlines() == ["##vso[task.setvariable variable=passed;isOutput=true]true",
                                           "##vso[task.setvariable variable=LLMOPS_BASELINE_READY]true"]


def test_the_package_imports_only_the_standard_library() -> None:
    """The action's prepare step runs it on the bare setup-python interpreter, before the install."""
    code = ("import sys, llmops_ci.ci, llmops_ci.ci.prepare, llmops_ci.ci.baseline, llmops_ci.ci.run\n"
            "import llmops_ci.ci.publish, llmops_ci.platforms.github, llmops_ci.platforms.azure_devops\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) - {'__main__'}))")
    # -S: no site-packages, as on the bare interpreter; the package from the source folder, as PYTHONPATH gives it
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, timeout=60,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert proc.stdout.strip() == "['llmops_ci']"


def test_every_entry_point_knows_the_ci_credentials_before_any_flow_runs() -> None:
    """The names live in the platform modules and reach ``core.child_env`` when the registry is built: a fresh
    process entered through the CLI, the steps or the wrappers' entry has them all."""
    root = Path(__file__).resolve().parents[2]
    for entry in ("llmops_ci.cli", "llmops_ci.steps", "llmops_ci.ci"):
        code = (f"import {entry}\nfrom llmops_ci.core.child_env import is_ci_credential\n"
                "print(all(map(is_ci_credential, ['GITHUB_TOKEN', 'ACTIONS_RUNTIME_TOKEN', 'SYSTEM_ACCESSTOKEN', "
                "'ENDPOINT_AUTH_X', 'SECUREFILE_TICKET_Y'])))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
        assert proc.stdout.strip() == "True", (entry, proc.stderr)
