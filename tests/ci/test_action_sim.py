"""action.yml run step by step (tests/ci/github_sim.py) through the events the docs name: push, pull_request,
schedule, workflow_dispatch, a fork's PR, a failed build of main and its rerun; the baseline each one restores
or saves, the outputs of each, and which step holds the token."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.ci import github_sim as gh
from tests.fakes.github import FakeGitHub, Recorded, Reply

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "web-classification"
PROJECT = "examples/web-classification"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "workspace"
    shutil.copytree(EXAMPLE, workspace / PROJECT, ignore=shutil.ignore_patterns(".llmops", "__pycache__"))
    return workspace


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with FakeGitHub() as server:
        yield server


def break_lint(workspace: Path) -> None:
    """A lint error (exit 1: a check failed): a node input that references no node."""
    dag = workspace / PROJECT / "flows" / "classify" / "flow.dag.yaml"
    dag.write_text(dag.read_text().replace("${classify_with_llm.output}", "${no_such_node.output}"))


def run(repo: gh.Repository, workspace: Path, tmp: Path, event: gh.Event, fake: FakeGitHub | None = None,
        **inputs: str) -> gh.JobResult:
    run_dir = tmp / f"run-{event.name}-{event.run_id}-{event.run_attempt}"
    shutil.rmtree(workspace / PROJECT / ".llmops", ignore_errors=True)  # every job starts from a fresh checkout
    inputs = {"steps": "lint", "working-directory": PROJECT, **inputs}
    runner = gh.Runner(repo, workspace, run_dir, event, inputs, token=fake.token if fake else "ghs_token",
                       api_url=fake.url if fake else "")
    return runner.run()


def baseline_keys(repo: gh.Repository) -> list[tuple[str, str]]:
    return [(e.ref, e.key) for e in repo.caches if e.key.startswith("llmops-baseline-")]


@pytest.mark.parametrize("event", [gh.push("main"), gh.schedule("main"), gh.dispatch("main")],
                         ids=["push", "schedule", "workflow_dispatch"])
def test_every_trigger_on_the_default_branch_saves_the_baseline(workspace: Path, tmp_path: Path,
                                                                 event: gh.Event) -> None:
    repo = gh.Repository()
    job = run(repo, workspace, tmp_path, event)
    assert job.status == "success", job.log
    assert job.step("prep").outputs["baseline-mode"] == "save", job.log
    keys = baseline_keys(repo)
    assert len(keys) == 1 and keys[0][0] == "refs/heads/main", keys
    assert keys[0][1] == f"llmops-baseline-main-{job.step('prep').outputs['scope']}-1000-1"
    assert job.outputs["passed"] == "true" and job.outputs["exit-code"] == "0"
    assert job.outputs["summary"].endswith(".llmops/summary.json")


@pytest.mark.parametrize("event", [gh.push("feature"), gh.dispatch("feature")], ids=["push", "workflow_dispatch"])
def test_other_branches_save_no_baseline(workspace: Path, tmp_path: Path, event: gh.Event) -> None:
    repo = gh.Repository()
    job = run(repo, workspace, tmp_path, event)
    assert job.status == "success", job.log
    assert job.step("prep").outputs["baseline-mode"] == "off"
    assert baseline_keys(repo) == []


def test_a_pull_request_gates_against_the_baseline_of_main_and_comments(workspace: Path, tmp_path: Path,
                                                                        fake: FakeGitHub) -> None:
    repo = gh.Repository()
    run(repo, workspace, tmp_path, gh.push("main", run_id=1))
    job = run(repo, workspace, tmp_path, gh.pull_request(7, run_id=2), fake)
    assert job.status == "success", job.log
    restored = job.step("baseline-restore").outputs["cache-matched-key"]
    assert restored.startswith("llmops-baseline-main-") and restored.endswith("-1-1")
    assert "baseline: the target branch's results from cache entry " + restored in job.step("run").log
    assert len(fake.bodies(7)) == 1
    assert job.outputs["comment-url"].startswith("https://github.com/octo/app/pull/7#issuecomment-")
    assert job.outputs["passed"] == "true"
    assert baseline_keys(repo) == [("refs/heads/main", restored)]  # a PR never saves one


def test_a_fork_pr_runs_skips_the_comment_and_passes(workspace: Path, tmp_path: Path) -> None:
    repo = gh.Repository()
    with FakeGitHub(write_forbidden=True) as fake:  # a fork's read-only token
        job = run(repo, workspace, tmp_path, gh.pull_request(5, fork=True), fake)
    assert job.status == "success", job.log
    assert fake.bodies(5) == []
    assert "could not write the PR comment" in job.step("publish").log
    assert job.outputs["passed"] == "true" and job.outputs["comment-url"] == ""


def test_a_failed_main_build_keeps_its_baseline_and_its_rerun_passes(workspace: Path, tmp_path: Path) -> None:
    repo = gh.Repository()
    break_lint(workspace)
    first = run(repo, workspace, tmp_path, gh.push("main", run_id=40))
    assert first.status == "failure" and first.outputs["passed"] == "false", first.log
    assert first.outputs["exit-code"] == "1"
    # a check failed (exit 1): complete results, so they are the baseline (the same policy as Azure Pipelines)
    assert [k for _, k in baseline_keys(repo)] == [first.step("prep").outputs["baseline-save-key"]]
    # "Re-run failed jobs": the same run id, attempt 2; the artifact and the baseline key are new names
    rerun = run(repo, workspace, tmp_path, gh.push("main", run_id=40, attempt=2))
    assert all(s.outcome != "failure" or s.id == "run" for s in rerun.steps), rerun.log
    assert sorted(repo.artifacts["40"]) == [first.step("prep").outputs["artifact"],
                                            rerun.step("prep").outputs["artifact"]]
    assert len(baseline_keys(repo)) == 2
    # the next PR restores the newest
    pr = run(repo, workspace, tmp_path, gh.pull_request(9, run_id=41), comment="false")
    assert pr.step("baseline-restore").outputs["cache-matched-key"].endswith("-40-2")


def test_the_upload_rule_the_simulation_enforces(tmp_path: Path) -> None:
    """What a fixed artifact name would hit on a rerun (upload-artifact v4+)."""
    repo = gh.Repository()
    runner = gh.Runner(repo, tmp_path, tmp_path, gh.push("main"), {})
    (tmp_path / "x").mkdir()
    runner._upload({"name": "fixed", "path": str(tmp_path / "x")})
    with pytest.raises(gh.ActionFailed, match="already exists on the workflow run"):
        runner._upload({"name": "fixed", "path": str(tmp_path / "x")})


@pytest.mark.parametrize("extras", ["azure,mlflow", "mlflow, azure", "MLflow\nazure"])
def test_comma_separated_extras_make_a_valid_cache_key(workspace: Path, tmp_path: Path, extras: str) -> None:
    repo = gh.Repository()
    job = run(repo, workspace, tmp_path, gh.push("feature"), extras=extras)
    assert job.status == "success", job.log
    prep = job.step("prep").outputs
    assert prep["extras"] == "azure,mlflow"
    assert "," not in prep["venv-key"] and "extras[azure+mlflow]" in prep["venv-key"]
    assert job.step("venv-cache").outcome == "success"


def test_a_branch_with_a_comma_still_saves_and_restores(workspace: Path, tmp_path: Path) -> None:
    repo = gh.Repository(default_branch="rel,1")
    main = run(repo, workspace, tmp_path, gh.push("rel,1", default="rel,1"))
    assert main.status == "success", main.log
    assert len(baseline_keys(repo)) == 1
    pr = run(repo, workspace, tmp_path, gh.pull_request(3, base="rel,1"), comment="false")
    assert pr.step("baseline-restore").outputs["cache-matched-key"] == baseline_keys(repo)[0][1]


@pytest.mark.parametrize(("inputs", "event"), [
    ({"working-directory": "no/such/folder"}, gh.push("main")),
    ({"steps": "lint; touch pwned"}, gh.push("main")),
    ({"extras": "azure]; touch pwned"}, gh.push("main")),
    ({}, gh.Event("pull_request_target", "refs/heads/main", {"number": 4, "pull_request": {"number": 4}})),
], ids=["bad-folder", "bad-step", "bad-extras", "pull_request_target"])
def test_outputs_are_set_when_the_job_stops_before_the_run(workspace: Path, tmp_path: Path, inputs: dict[str, str],
                                                           event: gh.Event, fake: FakeGitHub) -> None:
    repo = gh.Repository()
    job = run(repo, workspace, tmp_path, event, fake, **inputs)
    assert job.status == "failure"
    assert job.step("run").outcome == "skipped"
    assert job.outputs["passed"] == "false"
    assert job.outputs["exit-code"] == "none"
    assert job.outputs["metrics"] == "{}"
    assert fake.requests == [] and baseline_keys(repo) == []
    assert not list(tmp_path.rglob("pwned"))


def test_outputs_are_set_when_the_install_fails(workspace: Path, tmp_path: Path) -> None:
    """No venv python: the publish step falls back to the bare interpreter and still says passed=false."""
    repo = gh.Repository()
    runner = gh.Runner(repo, workspace, tmp_path, gh.push("main"), {"steps": "lint", "working-directory": PROJECT})
    original = runner._run

    def failing_install(step: dict, step_id: str, evaluator: gh.Evaluator) -> tuple[gh.StepResult, dict[str, str]]:
        if step_id == "venv":
            return gh.StepResult("venv", "Install llmops-ci", True, "failure", {}, "pip failed"), {}
        return original(step, step_id, evaluator)

    runner._run = failing_install  # type: ignore[method-assign]
    job = runner.run()
    assert job.step("run").outcome == "skipped" and job.step("publish").outcome == "success", job.log
    assert job.outputs["passed"] == "false"


def test_only_the_publish_step_holds_the_token(workspace: Path, tmp_path: Path, fake: FakeGitHub) -> None:
    job = run(gh.Repository(), workspace, tmp_path, gh.pull_request(8), fake)
    assert job.status == "success", job.log
    holders = sorted(step for step, env in job.environments.items() if fake.token in env.values())
    assert holders == ["publish"]
    assert "GITHUB_TOKEN" not in job.environments["run"]


def test_metric_outputs(workspace: Path, tmp_path: Path) -> None:
    """The publish step turns the summary's metrics (and the gate's baselines) into outputs."""
    job = run(gh.Repository(), workspace, tmp_path, gh.push("feature"))
    state = workspace / PROJECT / ".llmops"
    summary = json.loads((state / "summary.json").read_text())
    summary["flows"] = {"classify": {
        "evaluations": {"accuracy": {"metrics": {"accuracy": 0.9, "note": "text", "latency-p95": 2}}},
        "gate": {"checks": [{"metric": "accuracy.accuracy", "baseline": 0.85, "value": 0.9}]}}}
    (state / "summary.json").write_text(json.dumps(summary))
    runner = gh.Runner(gh.Repository(), workspace, tmp_path / "again", gh.push("feature"), {})
    step = next(s for s in runner.action["runs"]["steps"] if s.get("id") == "publish")
    evaluator = runner.contexts({"prep": {"outputs": {"state-dir": str(state)}},
                                 "run": {"outputs": {"exit-code": "0"}},
                                 "venv": {"outputs": {}}, "python": {"outputs": job.step("python").outputs}},
                                "success")
    result, _ = runner._run(step, "publish", evaluator)
    metrics = json.loads(result.outputs["metrics"])
    assert metrics == {"classify": {
        "accuracy.accuracy": {"value": 0.9, "baseline": 0.85, "delta": pytest.approx(0.05)},
        "accuracy.latency-p95": {"value": 2.0, "baseline": None, "delta": None}}}
    assert result.outputs["metric_classify_accuracy_accuracy"] == "0.9"
    assert float(result.outputs["delta_classify_accuracy_accuracy"]) == pytest.approx(0.05)
    assert result.outputs["delta_classify_accuracy_latency_p95"] == ""


# -- the workflow_run companion (dogfood-comment.yml): the comment for a fork's PR, without the PR's code ---------


@dataclass
class FakeGitHubWithPulls(FakeGitHub):
    """FakeGitHub plus ``GET /repos/{owner}/{repo}/pulls`` with its ``head`` filter ("user:ref-name") and ``state``
    (docs.github.com/rest/pulls/pulls#list-pull-requests)."""

    pulls: list[dict[str, Any]] = field(default_factory=list)

    def _route(self, rec: Recorded) -> Reply:
        if rec.method == "GET" and rec.path == f"/repos/{self.owner}/{self.repo}/pulls":
            if not self._authorized(rec.headers.get("authorization", "")):
                return Reply(401, {"message": "Bad credentials"})
            head, state = rec.query.get("head", ""), rec.query.get("state", "open")
            found = [p for p in self.pulls if (not head or p["head"]["label"] == head)
                     and (state == "all" or p["state"] == state)]
            return Reply(200, found)
        return super()._route(rec)


def workflow_run_event(run_id: int = 77, sha: str = "c0ffee", pull_requests: list[Any] | None = None) -> gh.Event:
    payload = {"action": "completed", "repository": {"default_branch": "main"},
               "workflow_run": {"id": 55, "event": "pull_request", "head_branch": "feature", "head_sha": sha,
                                "head_repository": {"full_name": "someone/app", "owner": {"login": "someone"}},
                                "pull_requests": pull_requests or []}}
    return gh.Event("workflow_run", "refs/heads/main", payload, run_id=run_id)


@pytest.mark.parametrize("baseline", ["none", "auto"])
def test_the_companion_comments_on_a_fork_pr_found_through_the_api(workspace: Path, tmp_path: Path,
                                                                    baseline: str) -> None:
    repo = gh.Repository()
    # the fork's check ran (read-only token, no comment) and uploaded its state dir
    with FakeGitHub(write_forbidden=True) as forked:
        check = run(repo, workspace, tmp_path, gh.pull_request(12, fork=True), forked, comment="false")
    assert check.status == "success" and forked.requests == [], check.log
    artifact = repo.artifacts["2000"][check.step("prep").outputs["artifact"]]
    # the companion: default branch checked out, the artifact's summary.json put in the state dir
    pulls = [{"number": 13, "state": "open", "head": {"label": "someone:feature", "sha": "0ld"}},
             {"number": 12, "state": "open", "head": {"label": "someone:feature", "sha": "c0ffee"}}]
    with FakeGitHubWithPulls(pulls=pulls) as fake:
        state = workspace / PROJECT / ".llmops"
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir(parents=True)
        shutil.copy(artifact / "summary.json", state / "summary.json")
        runner = gh.Runner(repo, workspace, tmp_path / "companion", workflow_run_event(),
                           {"steps": "comment", "working-directory": PROJECT, "baseline": baseline},
                           token=fake.token, api_url=fake.url)
        job = runner.run()
        assert job.status == "success", job.log
        assert len(fake.bodies(12)) == 1 and fake.bodies(13) == []
        assert job.outputs["comment-url"].endswith(f"/pull/12#issuecomment-{fake.comments[12][0]['id']}")
    assert job.step("prep").outputs["baseline-mode"] == "off"  # another run's results never become main's baseline
    assert baseline_keys(repo) == []


def test_the_companion_takes_a_same_repo_pr_from_the_event(workspace: Path, tmp_path: Path) -> None:
    repo = gh.Repository()
    run(repo, workspace, tmp_path, gh.pull_request(21), comment="false")
    with FakeGitHubWithPulls() as fake:
        event = workflow_run_event(pull_requests=[{"number": 21, "head": {"sha": "c0ffee"}}])
        job = gh.Runner(repo, workspace, tmp_path / "companion", event,
                        {"steps": "comment", "working-directory": PROJECT, "baseline": "none"},
                        token=fake.token, api_url=fake.url).run()
        assert job.status == "success", job.log
        assert len(fake.bodies(21)) == 1
        assert not any(r.path.endswith("/pulls") for r in fake.requests)


def test_the_companion_comments_nowhere_when_no_open_pr_has_that_head(workspace: Path, tmp_path: Path) -> None:
    repo = gh.Repository()
    run(repo, workspace, tmp_path, gh.pull_request(12, fork=True), comment="false")
    pulls = [{"number": 13, "state": "open", "head": {"label": "someone:feature", "sha": "0ld"}}]
    with FakeGitHubWithPulls(pulls=pulls) as fake:
        job = gh.Runner(repo, workspace, tmp_path / "companion", workflow_run_event(),
                        {"steps": "comment", "working-directory": PROJECT, "baseline": "none"},
                        token=fake.token, api_url=fake.url).run()
        assert job.status == "success", job.log
        assert fake.comments == {} and job.outputs["comment-url"] == ""
