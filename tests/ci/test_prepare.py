"""llmops_ci.ci.prepare (cache keys, the baseline decision per trigger) and llmops_ci.ci.publish (metric outputs,
outputs when nothing ran), as functions; the whole action is run in tests/ci/test_action_sim.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from llmops_ci.ci.plan import InputError
from llmops_ci.ci.prepare import baseline_plan, cache_part, normalise_extras
from llmops_ci.ci.publish import metric_values, output_name, publish
from llmops_ci.platforms.azure_devops import AzureDevOpsHost
from llmops_ci.platforms.github import GitHubHost


@pytest.mark.parametrize(("text", "backend", "extras"), [
    ("", "local", ()),
    ("azure,mlflow", "local", ("azure", "mlflow")),
    (" MLflow ,azure\n", "local", ("azure", "mlflow")),
    ("mlflow mlflow", "azureml", ("azure", "mlflow")),
    ("Agents_Extra", "local", ("agents-extra",)),  # PEP 685 normalisation
])
def test_extras_are_normalised(text: str, backend: str, extras: tuple[str, ...]) -> None:
    assert normalise_extras(text, backend) == extras


@pytest.mark.parametrize("bad", ["azure]", "a;b", "[x]", "-x"])
def test_bad_extras_name_the_input(bad: str) -> None:
    with pytest.raises(InputError, match=r"^extras: "):
        normalise_extras(bad, "local")


def test_cache_parts_never_hold_a_comma_and_stay_short() -> None:
    assert cache_part("rel,1 x") == "rel_1_x"
    long = cache_part("b" * 300)
    assert len(long) <= 100 and long != cache_part("b" * 299)


def event(tmp_path: Path, payload: dict[str, object]) -> str:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(payload))
    return str(path)


@pytest.mark.parametrize(("name", "ref", "payload", "mode"), [
    ("push", "refs/heads/main", {"repository": {"default_branch": "main"}}, "save"),
    ("push", "refs/heads/dev", {"repository": {"default_branch": "main"}}, "off"),
    ("push", "refs/tags/v1", {"repository": {"default_branch": "main"}}, "off"),
    ("schedule", "refs/heads/main", {"schedule": "0 3 * * *"}, "save"),  # no repository in a schedule payload
    ("workflow_dispatch", "refs/heads/main", {"repository": {"default_branch": "main"}}, "save"),
    ("workflow_dispatch", "refs/heads/dev", {"repository": {"default_branch": "main"}}, "off"),
    ("workflow_run", "refs/heads/main", {"repository": {"default_branch": "main"}}, "off"),
    ("release", "refs/tags/v1", {"repository": {"default_branch": "main"}}, "off"),  # a tag, not a branch
    ("merge_group", "refs/heads/gh-readonly-queue/main/pr-1", {"repository": {"default_branch": "main"}}, "off"),
])
def test_the_baseline_plan_per_trigger(tmp_path: Path, name: str, ref: str, payload: dict[str, object],
                                       mode: str) -> None:
    environ = {"GITHUB_EVENT_NAME": name, "GITHUB_REF": ref, "GITHUB_EVENT_PATH": event(tmp_path, payload)}
    assert baseline_plan(environ, "auto").mode == mode


def test_the_baseline_plan_of_a_pull_request_and_the_overrides(tmp_path: Path) -> None:
    pr = {"GITHUB_EVENT_NAME": "pull_request", "GITHUB_REF": "refs/pull/3/merge", "GITHUB_BASE_REF": "release"}
    assert baseline_plan(pr, "auto") == baseline_plan(pr, "auto").__class__("restore", "pull request into release",
                                                                              "release")
    assert baseline_plan(pr, "none").mode == "off"
    push = {"GITHUB_EVENT_NAME": "push", "GITHUB_REF": "refs/heads/trunk",
            "GITHUB_EVENT_PATH": event(tmp_path, {"repository": {"default_branch": "main"}})}
    assert baseline_plan({**push, "LLMOPS_DEFAULT_BRANCH": "trunk"}, "auto").mode == "save"
    unknown = {"GITHUB_EVENT_NAME": "repository_dispatch", "GITHUB_REF": "refs/heads/main",
               "GITHUB_EVENT_PATH": event(tmp_path, {})}
    assert "set the input default-branch" in baseline_plan(unknown, "auto").why


def test_metric_values_and_their_output_names() -> None:
    summary = {"flows": {
        "classify-v2": {"evaluations": {"acc": {"metrics": {"accuracy": 0.8, "label": "x", "bad": float("nan"),
                                                            "flag": True}}},
                        "gate": {"checks": [{"metric": "acc.accuracy", "baseline": 0.9}]}},
        "broken": "not a mapping"}}
    assert metric_values(summary) == {"classify-v2": {"acc.accuracy": {"value": 0.8, "baseline": 0.9,
                                                                       "delta": pytest.approx(-0.1)}}}
    assert output_name("metric", "classify-v2", "acc", "latency.p95") == "metric_classify_v2_acc_latency_p95"


def test_publish_when_nothing_ran_sets_passed_false_and_ignores_a_planted_summary(tmp_path: Path) -> None:
    state = tmp_path / ".llmops"
    state.mkdir()
    (state / "summary.json").write_text('{"schema": "llmops-ci/summary@1", "flows": {}}')  # not this run's
    out = io.StringIO()
    code = publish({"LLMOPS_STATE_DIR": str(state), "LLMOPS_EXIT_CODE": ""}, AzureDevOpsHost({}, out), out)
    assert code == 0
    lines = out.getvalue().splitlines()
    assert "##vso[task.setvariable variable=passed;isOutput=true]false" in lines
    assert "##vso[task.setvariable variable=summary;isOutput=true]" in lines
    assert "##vso[task.setvariable variable=exitCode;isOutput=true]none" in lines


def test_publish_refuses_pull_request_target(tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.write_text("")
    environ = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request_target", "GITHUB_OUTPUT": str(output),
               "LLMOPS_EXIT_CODE": "0", "LLMOPS_STATE_DIR": str(tmp_path)}
    assert publish(environ, GitHubHost(environ, io.StringIO()), io.StringIO()) == 2
    assert "passed=false" in output.read_text()
