"""No process that runs flow code, and no ancestor of it, holds the CI token: flow code that walks up its process
tree reading ``/proc/<pid>/environ`` (llmops-ci's, the step shell's) finds nothing in the action's run step, while
the publish step (which has the token) runs no flow code. Through the real wrapper entry ``python -m llmops_ci.ci``,
each step executed by bash as the runner does (tests/ci/github_sim.py) and as the agent does (azure_sim.py)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from tests.ci import azure_sim as az
from tests.ci import github_sim as gh
from tests.fakes.github import FakeGitHub

pytestmark = [pytest.mark.executor, pytest.mark.skipif(not Path("/proc/self/environ").exists(),
                                                        reason="needs /proc (Linux)")]

SPY = '''\
import os
from pathlib import Path

from promptflow.core import tool


def ancestors():
    pid = os.getpid()
    while pid > 1:
        yield pid
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        pid = int(stat.rsplit(")", 1)[1].split()[1])


@tool
def spy(report: str) -> str:
    """What a hostile dependency would do: read the environment of every process up the tree."""
    found = []
    for pid in ancestors():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        for entry in environ.split(b"\\0"):
            name, _, value = entry.partition(b"=")
            if name in (b"GITHUB_TOKEN", b"SYSTEM_ACCESSTOKEN") or value in (b"ghs_testtoken",
                                                                            b"ado-system-access-token"):
                found.append(f"{pid}:{name.decode()}")
    Path(report).write_text("\\n".join(found))
    return "looked"
'''

FLOW = '''\
inputs:
  report:
    type: string
outputs:
  result:
    type: string
    reference: ${spy.output}
nodes:
- name: spy
  type: python
  source:
    type: code
    path: spy.py
  inputs:
    report: ${inputs.report}
'''


def spy_project(root: Path, report: Path) -> Path:
    project = root / "proj"
    (project / "flows" / "spy").mkdir(parents=True)
    (project / "data").mkdir()
    (project / "flows" / "spy" / "flow.dag.yaml").write_text(FLOW)
    (project / "flows" / "spy" / "spy.py").write_text(SPY)
    (project / "data" / "spy.jsonl").write_text(json.dumps({"report": str(report)}) + "\n")
    (project / "llmops.yaml").write_text(textwrap.dedent("""\
        version: 1
        flows:
          spy:
            path: flows/spy
            data: data/spy.jsonl
            column_mapping:
              report: ${data.report}
        """))
    return project


def test_flow_code_in_the_action_finds_no_token_up_its_process_tree(tmp_path: Path) -> None:
    report = tmp_path / "found.txt"
    workspace = tmp_path / "workspace"
    spy_project(workspace, report)
    with FakeGitHub() as fake:
        runner = gh.Runner(gh.Repository(), workspace, tmp_path / "job", gh.pull_request(4),
                           {"steps": "batch-run", "working-directory": "proj"}, token=fake.token, api_url=fake.url)
        job = runner.run()
        assert job.step("run").outcome == "success", job.log
        assert report.read_text() == "", report.read_text()  # the flow ran and found nothing
        assert len(fake.bodies(4)) == 1  # and the publish step, which has the token, still commented

        # the test can fail: the same flow, with the token in the run step's env (the old layout), finds it
        report.unlink()
        leaky = gh.Runner(gh.Repository(), workspace, tmp_path / "leaky", gh.pull_request(4),
                          {"steps": "batch-run", "working-directory": "proj"}, token=fake.token, api_url=fake.url,
                          extra_env={"GITHUB_TOKEN": fake.token})
        leaky.run()
        assert "GITHUB_TOKEN" in report.read_text()


def test_flow_code_in_the_azure_template_finds_no_token_up_its_process_tree(tmp_path: Path) -> None:
    report = tmp_path / "found.txt"
    workspace = tmp_path / "w"
    spy_project(workspace / "s", report).rename(workspace / "s" / "self")
    (workspace / "s" / "llmops-ci").symlink_to(Path(__file__).resolve().parents[2], target_is_directory=True)
    org = az.Organisation(tmp_path / "org")
    build = org.new_build("refs/pull/9/merge", "PullRequest")
    agent = az.Agent(org, build, workspace, {"System.AccessToken": "ado-system-access-token",
                                             "System.PullRequest.TargetBranch": "refs/heads/main"})
    job = agent.run(az.job_steps(az.expand_pipeline({"steps": "batch-run", "comment": False})))
    assert job.step("llmops-ci batch-run").result == "succeeded", job.log
    assert report.read_text() == "", report.read_text()
    assert job.step("Publish the results").env["SYSTEM_ACCESSTOKEN"] == "ado-system-access-token"
    assert sys.platform.startswith("linux")
