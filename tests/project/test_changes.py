"""--changed-since: the flows a change touches, in real git repositories."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.config import Config, read_config
from llmops_ci.core.errors import UsageError
from llmops_ci.project.changes import ChangedFiles, Selection, changed_files, select_flows
from tests.helpers.projects import BASE_PROJECT, Project

OTHER_ENTRY = """\
          other:
            path: flows/other
            data: data/other.jsonl
            column_mapping:
              text: ${data.text}
            variant: ${classify.variant_0}
        """

DAG = BASE_PROJECT["flows/classify/flow.dag.yaml"].rstrip(" ")

TWO_FLOWS: dict[str, str] = {
    "llmops.yaml": BASE_PROJECT["llmops.yaml"].rstrip(" ") + OTHER_ENTRY,
    **{rel.replace("flows/classify/", "flows/other/"): text for rel, text in BASE_PROJECT.items()
       if rel.startswith("flows/classify/")},
    "data/other.jsonl": BASE_PROJECT["data/classify.jsonl"],
    "flows/shared/util.py": "def shout(text: str) -> str:\n    return text.upper()\n",
    "flows/shared/sub/helper.py": "VALUE = 1\n",
    ".gitignore": "*.log\n",
}


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


@pytest.fixture(autouse=True)
def _isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or system git config, and no repository above tmp_path."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)


def init_repo(root: Path) -> None:
    git(root, "init", "-q")
    git(root, "symbolic-ref", "HEAD", "refs/heads/main")
    git(root, "config", "user.name", "Test")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "commit.gpgsign", "false")


def commit(root: Path, message: str = "change") -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)


@pytest.fixture
def repo(project: Callable[..., Project]) -> Callable[..., Project]:
    """A git repository with two flows committed on main, checked out on a new branch 'change'."""

    def make(files: dict[str, str] | None = None) -> Project:
        proj = project({**TWO_FLOWS, **(files or {})})
        init_repo(proj.root)
        commit(proj.root, "base")
        git(proj.root, "checkout", "-q", "-b", "change")
        return proj

    return make


def load(proj: Project) -> Config:
    config, problems = read_config(proj.path("llmops.yaml"), environ=None)
    assert config is not None, problems
    assert [p for p in problems if p.rule != "env-unset"] == []
    return config


def select(proj: Project, ref: str = "main") -> Selection:
    return select_flows(load(proj), changed_files(ref, proj.root))


def test_flow_file_edit_selects_only_that_flow(repo: Callable[..., Project]) -> None:
    proj = repo()
    proj.replace("flows/classify/classify.jinja2", "Answer with JSON.", "Answer with JSON only.")
    commit(proj.root)
    result = select(proj)
    assert result.selected == ["classify"]
    assert result.unchanged == ["other"]
    assert result.reasons == {"classify": ["flows/classify/classify.jinja2 changed"]}
    assert result.all_reason is None


def test_nothing_changed_selects_nothing(repo: Callable[..., Project]) -> None:
    proj = repo()
    result = select(proj)
    assert result == Selection([], ["classify", "other"], {}, None)


def test_changed_files_are_absolute_and_include_staged_unstaged_and_untracked(repo: Callable[..., Project]) -> None:
    proj = repo()
    proj.write("flows/classify/committed.py", "A = 1\n")
    commit(proj.root)
    proj.write("flows/classify/staged.py", "B = 1\n")
    git(proj.root, "add", "flows/classify/staged.py")
    proj.replace("data/other.jsonl", "Nothing here", "Nothing at all")  # unstaged
    proj.write("flows/other/untracked.py", "C = 1\n")
    proj.write("flows/other/debug.log", "ignored by .gitignore\n")
    changed = changed_files("main", proj.root)
    assert isinstance(changed, ChangedFiles)
    root = Path(os.path.realpath(proj.root))
    assert {Path(os.path.realpath(p)) for p in changed} == {
        root / "flows/classify/committed.py", root / "flows/classify/staged.py", root / "data/other.jsonl",
        root / "flows/other/untracked.py"}
    assert all(p.is_absolute() for p in changed)
    assert changed.base == git(proj.root, "rev-parse", "main")


def test_untracked_file_under_a_flow_folder_counts(repo: Callable[..., Project]) -> None:
    proj = repo()
    proj.write("flows/other/notes.md", "new, never added\n")
    result = select(proj)
    assert result.selected == ["other"]
    assert result.reasons["other"] == ["flows/other/notes.md changed"]


def test_ignored_and_runtime_files_do_not_count(repo: Callable[..., Project]) -> None:
    proj = repo({".gitignore": "*.log\n"})  # .promptflow/ and __pycache__/ deliberately not ignored
    proj.write("flows/classify/run.log", "ignored\n")
    proj.write("flows/classify/.promptflow/flow.tools.json", "{}\n")
    proj.write("flows/classify/__pycache__/parse.cpython-311.pyc", "x")
    result = select(proj)
    assert result.selected == []


def test_shared_include_selects_only_the_flow_that_includes_it(repo: Callable[..., Project]) -> None:
    dag = DAG + "        additional_includes:\n        - ../shared/util.py\n"
    proj = repo({"flows/other/flow.dag.yaml": dag})
    proj.write("flows/shared/util.py", "def shout(text: str) -> str:\n    return text.upper() + '!'\n")
    commit(proj.root)
    result = select(proj)
    assert result.selected == ["other"]
    assert result.reasons["other"] == ["flows/shared/util.py changed (additional include)"]
    proj.write("flows/shared/sub/helper.py", "VALUE = 2\n")  # not included by anyone
    assert select(proj).selected == ["other"]


def test_folder_include_covers_everything_below_it(repo: Callable[..., Project]) -> None:
    dag = DAG + "        additional_includes:\n        - ../shared\n"
    proj = repo({"flows/classify/flow.dag.yaml": dag})
    proj.write("flows/shared/sub/helper.py", "VALUE = 2\n")
    result = select(proj)
    assert result.selected == ["classify"]
    assert result.reasons["classify"] == ["flows/shared/sub/helper.py changed (additional include)"]


def test_requirements_named_by_the_flow_select_it(repo: Callable[..., Project]) -> None:
    dag = (DAG
           + "        environment:\n          python_requirements_txt: ../requirements.txt\n")
    proj = repo({"flows/other/flow.dag.yaml": dag, "flows/requirements.txt": "requests\n"})
    proj.write("flows/requirements.txt", "requests>=2\n")
    result = select(proj)
    assert result.selected == ["other"]
    assert result.reasons["other"] == ["flows/requirements.txt changed (python_requirements_txt)"]


def test_data_edit_selects_the_flow_reading_it(repo: Callable[..., Project]) -> None:
    proj = repo()
    proj.replace("data/other.jsonl", "Watch the trailer", "Watch the film")
    commit(proj.root)
    result = select(proj)
    assert result.selected == ["other"]
    assert result.reasons["other"] == ["data/other.jsonl changed (data)"]


def test_data_folder_covers_its_files(repo: Callable[..., Project]) -> None:
    proj = repo({"llmops.yaml": TWO_FLOWS["llmops.yaml"].replace("data: data/other.jsonl", "data: data/other"),
                 "data/other/part1.jsonl": BASE_PROJECT["data/classify.jsonl"]})
    proj.write("data/other/part2.jsonl", BASE_PROJECT["data/classify.jsonl"])
    assert select(proj).selected == ["other"]


def test_evaluation_flow_edit_selects_the_flows_that_use_it(repo: Callable[..., Project]) -> None:
    proj = repo()
    proj.replace("flows/eval/grade.py", '"Correct"', '"Right"')
    result = select(proj)
    assert result.selected == ["classify"]
    assert result.reasons["classify"] == ["flows/eval/grade.py changed (evaluation accuracy)"]


def test_shared_evaluation_selects_every_flow_using_it(repo: Callable[..., Project]) -> None:
    both = OTHER_ENTRY.rstrip(" ") + """\
            evaluations:
              score:
                path: flows/eval
                data: data/eval.jsonl
        """
    proj = repo({"llmops.yaml": BASE_PROJECT["llmops.yaml"].rstrip(" ") + both, "data/eval.jsonl": "{}\n"})
    proj.replace("flows/eval/accuracy.py", "max(len(grades), 1)", "max(len(grades), 2)")
    assert select(proj).selected == ["classify", "other"]
    git(proj.root, "checkout", "-q", "--", ".")
    proj.write("data/eval.jsonl", '{"a": 1}\n')
    result = select(proj)
    assert result.selected == ["other"]
    assert result.reasons["other"] == ["data/eval.jsonl changed (data of evaluation score)"]


def test_rename_counts_as_both_paths(repo: Callable[..., Project]) -> None:
    proj = repo()
    git(proj.root, "mv", "flows/classify/parse.py", "flows/other/parse_moved.py")
    commit(proj.root)
    result = select(proj)
    assert result.selected == ["classify", "other"]
    assert result.reasons["classify"] == ["flows/classify/parse.py changed"]
    assert result.reasons["other"] == ["flows/other/parse_moved.py changed"]


def test_config_entry_edit_selects_only_that_flow(repo: Callable[..., Project]) -> None:
    proj = repo()
    head, other = proj.read("llmops.yaml").split("  other:\n")
    proj.write("llmops.yaml", head + "  other:\n" + other.replace("${data.text}", "${data.body}"))
    result = select(proj)  # uncommitted
    assert result.selected == ["other"]
    assert result.reasons["other"] == ["llmops.yaml flows.other.column_mapping changed"]
    assert result.all_reason is None
    commit(proj.root)
    assert select(proj).selected == ["other"]


def test_reordering_or_reformatting_llmops_yaml_selects_nothing(repo: Callable[..., Project]) -> None:
    proj = repo()
    proj.replace("llmops.yaml", "      text: ${data.text}\n", "      'text': \"${data.text}\"  # quoted\n")
    proj.write("llmops.yaml", "# a comment\n" + proj.read("llmops.yaml"))
    assert select(proj).selected == []


def test_top_level_connections_edit_selects_all(repo: Callable[..., Project]) -> None:
    proj = repo()
    proj.replace("llmops.yaml", "type: open_ai", "type: open_ai\n    organization: acme")
    commit(proj.root)
    result = select(proj)
    assert result.selected == ["classify", "other"]
    assert result.unchanged == []
    assert result.all_reason == "llmops.yaml top-level 'connections' changed"
    assert result.reasons == {"classify": [result.all_reason], "other": [result.all_reason]}


def test_new_top_level_key_selects_all(repo: Callable[..., Project]) -> None:
    proj = repo()
    proj.write("llmops.yaml", proj.read("llmops.yaml") + textwrap.dedent("""\
        azureml:
          subscription_id: s
          resource_group: g
          workspace: w
        """))
    result = select(proj)
    assert result.selected == ["classify", "other"]
    assert result.all_reason == "llmops.yaml top-level 'azureml' changed"


def test_new_flow_entry_is_selected(repo: Callable[..., Project]) -> None:
    proj = repo()
    proj.write("llmops.yaml", proj.read("llmops.yaml")
               + textwrap.indent(textwrap.dedent(OTHER_ENTRY.replace("other:", "third:")), "  "))
    result = select(proj)
    assert result.selected == ["third"]
    assert result.unchanged == ["classify", "other"]
    assert result.reasons == {"third": ["new flow in llmops.yaml"]}


def test_llmops_yaml_missing_at_base_selects_all(project: Callable[..., Project]) -> None:
    proj = project({"README.md": "hello\n"}, base=False)
    init_repo(proj.root)
    commit(proj.root, "readme")
    git(proj.root, "checkout", "-q", "-b", "change")
    proj = project(TWO_FLOWS)
    result = select(proj)
    assert result.selected == ["classify", "other"]
    assert result.all_reason is not None and "did not exist" in result.all_reason


def test_run_file_edit_selects_its_flow(repo: Callable[..., Project]) -> None:
    entry = """\
          runner:
            run_file: runs/runner.yml
        """
    run_yml = """\
        flow: ../flows/other
        data: ../data/other.jsonl
        column_mapping:
          text: ${data.text}
        """
    proj = repo({"llmops.yaml": TWO_FLOWS["llmops.yaml"].rstrip(" ") + entry, "runs/runner.yml": run_yml})
    proj.write("runs/runner.yml", run_yml.replace("${data.text}", "${data.label}"))
    result = select(proj)
    assert result.selected == ["runner"]
    assert result.reasons["runner"] == ["runs/runner.yml changed (run_file)"]
    git(proj.root, "checkout", "-q", "--", ".")
    proj.write("flows/other/extra.py", "X = 1\n")
    assert select(proj).selected == ["other", "runner"]


def test_only_changes_since_the_merge_base_count(repo: Callable[..., Project]) -> None:
    proj = repo()
    proj.write("flows/classify/mine.py", "A = 1\n")
    commit(proj.root, "on the branch")
    git(proj.root, "checkout", "-q", "main")
    proj.write("flows/other/theirs.py", "B = 1\n")
    commit(proj.root, "main moved on")
    git(proj.root, "checkout", "-q", "change")
    assert select(proj).selected == ["classify"]
    base = git(proj.root, "merge-base", "main", "HEAD")
    assert select(proj, base).selected == ["classify"]


def test_plain_set_without_base_treats_llmops_yaml_change_as_all(repo: Callable[..., Project]) -> None:
    proj = repo()
    config = load(proj)
    result = select_flows(config, {proj.path("llmops.yaml")})
    assert result.selected == ["classify", "other"]
    assert result.all_reason is not None and "no base commit" in result.all_reason
    assert select_flows(config, {proj.path("flows/other/parse.py")}).selected == ["other"]


def test_unknown_ref_is_a_usage_error(repo: Callable[..., Project]) -> None:
    proj = repo()
    with pytest.raises(UsageError) as info:
        changed_files("origin/main", proj.root)
    assert info.value.return_code == 2
    message = str(info.value)
    assert "git cannot find REF 'origin/main'; fetch it first: git fetch origin main" in message
    assert "fetch-depth: 0" in message


def test_not_a_git_repository_is_a_usage_error(project: Callable[..., Project]) -> None:
    proj = project()
    with pytest.raises(UsageError) as info:
        changed_files("main", proj.root)
    assert info.value.return_code == 2
    assert "not inside" in str(info.value) and "git repository" in str(info.value)


def test_option_like_ref_is_refused(repo: Callable[..., Project]) -> None:
    proj = repo()
    with pytest.raises(UsageError, match="give a branch"):
        changed_files("--output=/tmp/x", proj.root)


def test_shallow_clone_without_common_history_says_how_to_fetch(
        repo: Callable[..., Project], tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    proj = repo()
    proj.write("flows/classify/mine.py", "A = 1\n")
    commit(proj.root, "on the branch")
    git(proj.root, "checkout", "-q", "main")
    proj.write("flows/other/theirs.py", "B = 1\n")
    commit(proj.root, "main moved on")
    git(proj.root, "checkout", "-q", "change")
    clone = tmp_path_factory.mktemp("clone") / "repo"
    git(clone.parent, "clone", "-q", "--depth", "1", "--no-single-branch", "--branch", "change",
        proj.root.as_uri(), str(clone))
    monkeypatch.chdir(clone)
    with pytest.raises(UsageError) as info:
        changed_files("origin/main")
    assert "shallow" in str(info.value) and "git fetch --unshallow" in str(info.value)
    with pytest.raises(UsageError, match="git fetch origin release"):
        changed_files("origin/release")
