"""llmops_ci.ci.plan: the wrapper inputs, read from LLMOPS_* variables, and the command line of each step."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from llmops_ci.ci.plan import STEPS, InputError, make_plan, read_inputs, split_names
from llmops_ci.platforms import Host
from llmops_ci.platforms.azure_devops import AzureDevOpsHost
from llmops_ci.platforms.github import GitHubHost
from llmops_ci.platforms.local import LocalHost


def github(**environ: str) -> GitHubHost:
    return GitHubHost({"GITHUB_ACTIONS": "true", **environ}, io.StringIO())


def azure(**environ: str) -> AzureDevOpsHost:
    return AzureDevOpsHost({"TF_BUILD": "True", **environ}, io.StringIO())


def commands(environ: dict[str, str], host: Host | None = None) -> list[list[str]]:
    host = host or LocalHost({}, io.StringIO())
    return make_plan(read_inputs(environ, host), host).commands


def options(argv: list[str], name: str) -> list[str]:
    return [arg.partition("=")[2] for arg in argv if arg.startswith(name + "=")]


@pytest.mark.parametrize(("text", "names"), [
    ("", ()),
    ("classify", ("classify",)),
    ("classify, summarize", ("classify", "summarize")),
    ("classify,summarize", ("classify", "summarize")),
    ("classify\nsummarize\n", ("classify", "summarize")),  # flows: | in YAML
    ("  classify \r\n\tsummarize  ,, rag\n", ("classify", "summarize", "rag")),
])
def test_split_names(text: str, names: tuple[str, ...]) -> None:
    assert split_names(text) == names


def test_defaults_are_one_pr_step_with_the_common_options() -> None:
    assert commands({}) == [["pr", "--config", "llmops.yaml", "--state-dir=.llmops", "--backend=local"]]


def test_each_step_gets_only_the_options_it_takes(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{}")
    environ = {"LLMOPS_STEPS": " ".join(STEPS), "LLMOPS_FLOWS": "a\nb", "LLMOPS_LLM_CACHE": "replay",
               "LLMOPS_CHANGED_SINCE": "origin/main", "LLMOPS_BASELINE_DIR": str(tmp_path)}
    plan = {argv[0]: argv for argv in commands(environ, github(GITHUB_EVENT_NAME="pull_request"))}
    assert list(plan) == list(STEPS)
    for step, argv in plan.items():
        assert options(argv, "--flow") == ["a", "b"], step
        assert options(argv, "--backend") == ["local"]
        assert argv[1:3] == ["--config", "llmops.yaml"]
    took = {name: sorted(step for step, argv in plan.items() if options(argv, name))
            for name in ("--baseline", "--changed-since", "--llm-cache")}
    assert took == {"--baseline": ["batch-run", "eval-run", "gate", "pr"],
                    "--changed-since": ["batch-run", "eval-run", "pr"],
                    "--llm-cache": ["batch-run", "eval-run", "pr", "test"]}
    assert options(plan["gate"], "--baseline") == [str(tmp_path)]


def test_run_steps_take_the_baseline_only_with_changed_since(tmp_path: Path) -> None:
    """For batch-run and eval-run --baseline is where unchanged flows' results come from."""
    (tmp_path / "summary.json").write_text("{}")
    plan = commands({"LLMOPS_STEPS": "batch-run eval-run gate", "LLMOPS_BASELINE_DIR": str(tmp_path)})
    assert [bool(options(argv, "--baseline")) for argv in plan] == [False, False, True]


def test_an_explicit_baseline_path_is_passed_as_given() -> None:
    plan = commands({"LLMOPS_STEPS": "gate", "LLMOPS_BASELINE": "main-results/summary.json"})
    assert options(plan[0], "--baseline") == ["main-results/summary.json"]
    assert options(commands({"LLMOPS_STEPS": "gate", "LLMOPS_BASELINE": "none"})[0], "--baseline") == []


def test_auto_baseline_without_a_restored_one_says_so_on_a_pull_request(tmp_path: Path) -> None:
    host = github(GITHUB_EVENT_NAME="pull_request", GITHUB_BASE_REF="main")
    plan = make_plan(read_inputs({"LLMOPS_BASELINE_DIR": str(tmp_path / "missing")}, host), host)
    assert options(plan.commands[0], "--baseline") == []
    assert [level for level, _ in plan.notes] == ["notice"]
    host = github(GITHUB_EVENT_NAME="push")
    assert make_plan(read_inputs({}, host), host).notes == []


@pytest.mark.parametrize(("host", "ref"), [
    (github(GITHUB_EVENT_NAME="pull_request", GITHUB_BASE_REF="release/1.x"), "origin/release/1.x"),
    (github(GITHUB_EVENT_NAME="push", GITHUB_BASE_REF=""), None),
    (azure(BUILD_REASON="PullRequest", SYSTEM_PULLREQUEST_TARGETBRANCH="refs/heads/main"), "origin/main"),
    (azure(BUILD_REASON="PullRequest", SYSTEM_PULLREQUEST_TARGETBRANCH="main"), "origin/main"),  # a GitHub repo
    (azure(BUILD_REASON="IndividualCI"), None),
])
def test_changed_since_auto_is_the_target_branch_of_a_pull_request(host: Host, ref: str | None) -> None:
    plan = commands({"LLMOPS_CHANGED_SINCE": "auto"}, host)
    assert options(plan[0], "--changed-since") == ([ref] if ref else [])


def test_changed_since_on_steps_that_run_no_flows_is_a_warning() -> None:
    host = LocalHost({}, io.StringIO())
    plan = make_plan(read_inputs({"LLMOPS_STEPS": "lint gate", "LLMOPS_CHANGED_SINCE": "origin/main"}, host), host)
    assert not any(options(argv, "--changed-since") for argv in plan.commands)
    assert plan.notes[0][0] == "warning" and "changed" in plan.notes[0][1].lower()


@pytest.mark.parametrize(("value", "off"), [("true", False), ("True", False), ("", False), ("auto", False),
                                            ("false", True), ("False", True), ("off", True), ("0", True)])
def test_comment(value: str, off: bool) -> None:
    assert ("--comment=off" in commands({"LLMOPS_COMMENT": value})[0]) is off


def test_comment_is_off_where_the_host_cannot_write_one() -> None:
    host = azure(BUILD_REPOSITORY_PROVIDER="GitHub")
    plan = make_plan(read_inputs({}, host), host)
    assert "--comment=off" in plan.commands[0]
    assert any("only Azure Repos" in text for _, text in plan.notes)


def test_values_that_look_like_options_stay_values() -> None:
    argv = commands({"LLMOPS_FLOWS": "-x --help", "LLMOPS_CONFIG": "-odd.yaml", "LLMOPS_STEPS": "lint"})[0]
    assert options(argv, "--flow") == ["-x", "--help"]
    assert argv[1:3] == ["--config", "./-odd.yaml"]


@pytest.mark.parametrize(("environ", "message"), [
    ({"LLMOPS_STEPS": "lint; rm -rf /"}, "unknown step 'lint;'"),
    ({"LLMOPS_STEPS": "lint --help"}, "unknown step '--help'"),
    ({"LLMOPS_COMMENT": "maybe"}, "comment: 'maybe' is neither true nor false"),
])
def test_bad_inputs_name_the_input(environ: dict[str, str], message: str) -> None:
    with pytest.raises(InputError, match=r"^(step|steps|comment):") as err:
        read_inputs(environ, github())
    assert message in str(err.value)
    if "STEPS" in next(iter(environ)):
        assert str(err.value).startswith("steps:")  # the action's input and the template's parameter: `steps`
        with pytest.raises(InputError, match=r"^steps:"):
            read_inputs(environ, azure())


def test_the_deprecated_step_input_still_works_with_a_warning() -> None:
    out = io.StringIO()
    host = GitHubHost({"GITHUB_ACTIONS": "true"}, out)
    assert read_inputs({"LLMOPS_STEP": "lint gate", "LLMOPS_STEPS": ""}, host).steps == ("lint", "gate")
    assert "::warning title=llmops-ci::the input 'step' is deprecated: name it 'steps'" in out.getvalue()
    assert read_inputs({"LLMOPS_STEP": "lint", "LLMOPS_STEPS": "lint"}, github()).steps == ("lint",)
    assert read_inputs({"LLMOPS_STEP": "", "LLMOPS_STEPS": ""}, github()).steps == ("pr",)
    with pytest.raises(InputError, match=r"^steps: give the steps once"):
        read_inputs({"LLMOPS_STEP": "lint", "LLMOPS_STEPS": "pr"}, github())
    with pytest.raises(InputError, match=r"^step: unknown step 'lnt'"):
        read_inputs({"LLMOPS_STEP": "lnt"}, github())
