"""--changed-since beyond the flow folder: run files' env files, configs below the repo root, hints, base configs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.config import read_config
from llmops_ci.core.errors import UsageError
from llmops_ci.project.changes import ChangedFiles, Selection, changed_files, merge_base, repo_top, select_flows
from tests.helpers.projects import BASE_PROJECT, Project
from tests.project.test_changes import (
    TWO_FLOWS,
    _isolated_git,  # noqa: F401  (an autouse fixture: no user git config)
    commit,
    git,
    init_repo,
    load,
    select,
)


@pytest.fixture(name="repo")
def _repo(project: Callable[..., Project]) -> Callable[..., Project]:
    """As in test_changes: two flows committed on main, checked out on a new branch 'change'."""

    def make(files: dict[str, str] | None = None) -> Project:
        proj = project({**TWO_FLOWS, **(files or {})})
        init_repo(proj.root)
        commit(proj.root, "base")
        git(proj.root, "checkout", "-q", "-b", "change")
        return proj

    return make

RUNNER = """\
          runner:
            run_file: runs/runner.yml
        """
RUN_YML = """\
flow: ../flows/other
data: ../data/other.jsonl
environment_variables: env/runner.env
column_mapping:
  text: ${data.text}
"""


def test_a_run_files_environment_variables_file_selects_its_flow(repo: Callable[..., Project]) -> None:
    proj = repo({"llmops.yaml": TWO_FLOWS["llmops.yaml"].rstrip(" ") + RUNNER, "runs/runner.yml": RUN_YML,
                 "runs/env/runner.env": "MODE=a\n"})
    proj.write("runs/env/runner.env", "MODE=b\n")
    result = select(proj)
    assert result.selected == ["runner"]
    assert result.reasons["runner"] == ["runs/env/runner.env changed (environment_variables file)"]


def test_a_cassette_selects_the_flow_it_replays(repo: Callable[..., Project]) -> None:
    proj = repo({"cassettes/other.json": "{}\n", "cassettes/classify.accuracy.json": "{}\n"})
    proj.write("cassettes/other.json", '{"x": 1}\n')
    result = select(proj)
    assert (result.selected, result.reasons["other"]) == (["other"], ["cassettes/other.json changed (LLM cassette)"])
    git(proj.root, "checkout", "-q", "--", ".")
    proj.write("cassettes/classify.accuracy.json", '{"x": 1}\n')
    result = select(proj)
    assert result.selected == ["classify"]
    assert result.reasons["classify"] == ["cassettes/classify.accuracy.json changed (LLM cassette of evaluation "
                                          "accuracy)"]


def test_a_config_below_the_repo_root_from_another_directory(project: Callable[..., Project],
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = project({f"app/{rel}": text for rel, text in TWO_FLOWS.items()} | {"README.md": "top\n"}, base=False)
    init_repo(proj.root)
    commit(proj.root, "base")
    git(proj.root, "checkout", "-q", "-b", "change")
    proj.write("app/flows/other/new.py", "X = 1\n")
    proj.write("README.md", "changed, but no flow's\n")
    head, other = proj.read("app/llmops.yaml").split("  other:\n")
    proj.write("app/llmops.yaml", head + "  other:\n" + other.replace("${data.text}", "${data.body}"))
    elsewhere = tmp_path.parent / (tmp_path.name + "-elsewhere")
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config, _ = read_config(
        proj.path("app/llmops.yaml"), environ=None)
    assert config is not None
    changed = changed_files("main", proj.path("app/flows"))
    assert changed.root == Path(os.path.realpath(proj.root))
    result = select_flows(config, changed)
    assert result.selected == ["other"]
    assert result.reasons["other"] == ["llmops.yaml flows.other.column_mapping changed", "flows/other/new.py changed"]
    assert result.all_reason is None


def test_base_config_that_is_not_a_mapping_selects_all(repo: Callable[..., Project]) -> None:
    proj = repo({"llmops.yaml": "- not\n- a mapping\n"})
    proj.write("llmops.yaml", TWO_FLOWS["llmops.yaml"])
    result = select(proj)
    assert result.selected == ["classify", "other"]
    base = git(proj.root, "rev-parse", "main")[:12]
    assert result.all_reason == f"llmops.yaml at {base} is not a mapping"
    assert result.reasons["classify"] == [result.all_reason]


def test_base_config_that_is_not_yaml_selects_all(repo: Callable[..., Project]) -> None:
    proj = repo({"llmops.yaml": "flows: [unclosed\n"})
    proj.write("llmops.yaml", TWO_FLOWS["llmops.yaml"])
    result = select(proj)
    base = git(proj.root, "rev-parse", "main")[:12]
    assert result.selected == ["classify", "other"] and result.all_reason == f"llmops.yaml at {base} is not valid YAML"


def test_several_keys_of_an_entry_and_of_the_top_level(repo: Callable[..., Project]) -> None:
    proj = repo()
    head, other = proj.read("llmops.yaml").split("  other:\n")
    other = other.replace("data: data/other.jsonl", "data: data/classify.jsonl").replace("${data.text}", "${data.b}")
    proj.write("llmops.yaml", head + "  other:\n" + other)
    result = select(proj)
    assert result.selected == ["other"]
    assert result.reasons["other"] == ["llmops.yaml flows.other.column_mapping changed",
                                       "llmops.yaml flows.other.data changed"]
    base = git(proj.root, "rev-parse", "main")
    proj.write("llmops.yaml", head + "  other:\n" + other + "llm_cache:\n  mode: replay\nazureml:\n  workspace: w\n")
    config, problems = read_config(proj.path("llmops.yaml"), environ=None)
    assert config is not None, problems
    result = select_flows(config, {proj.path("llmops.yaml")}, base=base, repo_root=proj.root)
    assert result.all_reason == "llmops.yaml top-level 'azureml', 'llm_cache' changed"


def test_a_removed_key_of_an_entry_is_a_change(repo: Callable[..., Project]) -> None:
    proj = repo()
    head, other = proj.read("llmops.yaml").split("  other:\n")
    proj.write("llmops.yaml", head + "  other:\n" + other.replace("    variant: ${classify.variant_0}\n", ""))
    result = select(proj)
    assert result.selected == ["other"]
    assert result.reasons["other"] == ["llmops.yaml flows.other.variant changed"]


def test_an_entry_that_is_no_mapping_at_base(repo: Callable[..., Project]) -> None:
    proj = repo({"llmops.yaml": TWO_FLOWS["llmops.yaml"].split("  other:\n")[0] + "  other: flows/other\n"})
    proj.write("llmops.yaml", TWO_FLOWS["llmops.yaml"])
    result = select(proj)
    assert "other" in result.selected and result.all_reason is None
    assert result.reasons["other"][0].startswith("llmops.yaml flows.other.")


@pytest.mark.parametrize(("remotes", "ref", "hint"), [
    (["upstream"], "upstream/main", "git fetch upstream main"),
    (["upstream"], "refs/remotes/upstream/release", "git fetch upstream release"),
    (["upstream", "origin"], "origin/dev", "git fetch origin dev"),
    (["upstream"], "feature", "git fetch upstream feature"),
    (["fork", "upstream"], "feature", "git fetch fork feature"),
    (["upstream", "origin"], "refs/heads/feature", "git fetch origin feature"),
    ([], "team/feature", "git fetch team feature"),
    ([], "feature", "git fetch origin feature"),
    (["upstream"], "someone/feature", "git fetch upstream someone/feature"),
])
def test_the_fetch_hint_names_the_remote(remotes: list[str], ref: str, hint: str,
                                         repo: Callable[..., Project]) -> None:
    proj = repo()
    for name in remotes:
        git(proj.root, "remote", "add", name, "https://example.invalid/x.git")
    with pytest.raises(UsageError) as info:
        changed_files(ref, proj.root)
    assert f"fetch it first: {hint} (with actions/checkout" in str(info.value)


@pytest.mark.parametrize("ref", ["", "main branch", "main\n", "-p"])
def test_refs_that_are_no_ref_are_refused(ref: str, repo: Callable[..., Project]) -> None:
    proj = repo()
    with pytest.raises(UsageError, match="give a branch, tag or commit"):
        merge_base(ref, proj.root)


def test_a_repository_without_commits(project: Callable[..., Project]) -> None:
    proj = project({"README.md": "x\n"}, base=False)
    init_repo(proj.root)
    with pytest.raises(UsageError) as info:
        merge_base("HEAD", proj.root)
    assert "git cannot find REF 'HEAD'" in str(info.value)
    commit(proj.root, "first")
    git(proj.root, "checkout", "-q", "--orphan", "empty")
    with pytest.raises(UsageError, match="has no commit yet; commit first"):
        merge_base("main", proj.root)


def test_unrelated_histories_say_so(repo: Callable[..., Project]) -> None:
    proj = repo()
    git(proj.root, "checkout", "-q", "--orphan", "unrelated")
    commit(proj.root, "unrelated")
    with pytest.raises(UsageError) as info:
        merge_base("main", proj.root)
    assert "no common history between 'main' and HEAD; compare with the branch" in str(info.value)


def test_repo_top_and_folders_that_are_not(project: Callable[..., Project], repo: Callable[..., Project],
                                           tmp_path: Path) -> None:
    proj = repo()
    assert repo_top(proj.path("flows/classify")) == Path(os.path.realpath(proj.root))
    with pytest.raises(UsageError, match="is not a folder"):
        repo_top(proj.path("llmops.yaml"))
    with pytest.raises(UsageError, match="is not inside one"):
        repo_top(tmp_path.parent)


def test_merge_base_returns_the_commit_and_the_top(repo: Callable[..., Project]) -> None:
    proj = repo()
    base, top = merge_base("main", proj.path("flows"))
    assert base == git(proj.root, "rev-parse", "main") and top == Path(os.path.realpath(proj.root))


def test_noise_below_a_dependency_is_ignored_but_the_dependency_itself_counts(
        repo: Callable[..., Project]) -> None:
    proj = repo()
    proj.write("flows/other/sub/__pycache__/x.cpython-311.pyc", "x")
    proj.write("flows/other/mod.pyo", "x")
    proj.write("flows/other/.runs/r.json", "{}")
    assert select(proj).selected == []
    proj.write("flows/other/pycache_notes.md", "not noise\n")
    assert select(proj).selected == ["other"]


def test_plain_sets_of_paths_take_base_and_root_as_arguments(repo: Callable[..., Project]) -> None:
    proj = repo()
    proj.replace("llmops.yaml", "type: open_ai", "type: open_ai\n    organization: acme")
    config = load(proj)
    base = git(proj.root, "rev-parse", "main")
    result = select_flows(config, {proj.path("llmops.yaml")}, base=base, repo_root=proj.root)
    assert result.all_reason == "llmops.yaml top-level 'connections' changed"
    result = select_flows(config, {proj.path("llmops.yaml")}, base=base)  # the top found from the config
    assert result.all_reason == "llmops.yaml top-level 'connections' changed"
    changed = ChangedFiles({proj.path("llmops.yaml")}, base="0" * 40, root=proj.root)
    assert select_flows(config, changed, base=base).all_reason == "llmops.yaml top-level 'connections' changed"


def test_a_config_file_outside_the_repository_did_not_exist_at_base(repo: Callable[..., Project],
                                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    proj = repo()
    outside = tmp_path_factory.mktemp("outside")
    (outside / "llmops.yaml").write_text(BASE_PROJECT["llmops.yaml"])
    for rel, text in BASE_PROJECT.items():
        (outside / rel).parent.mkdir(parents=True, exist_ok=True)
        (outside / rel).write_text(text)
    config, _ = read_config(outside / "llmops.yaml",
                                                                                     environ=None)
    base = git(proj.root, "rev-parse", "main")
    result = select_flows(config, {outside / "llmops.yaml"}, base=base, repo_root=proj.root)
    assert result.all_reason == f"llmops.yaml did not exist at {base[:12]}"


def _other_entry(proj: Project, edit: Callable[[str], str]) -> None:
    head, other = proj.read("llmops.yaml").split("  other:\n")
    proj.write("llmops.yaml", head + "  other:\n" + edit(other))


def test_an_evaluator_module_in_the_project_selects_the_flows_using_it(repo: Callable[..., Project]) -> None:
    entry = """\
            evaluations:
              same:
                scorer: scorers.labels:same_label
                column_mapping:
                  outputs: ${run.outputs.category}
        """
    proj = repo({"llmops.yaml": TWO_FLOWS["llmops.yaml"].rstrip(" ") + entry,
                 "scorers/__init__.py": "", "scorers/labels.py": "def same_label(outputs):\n    return 1\n"})
    proj.write("scorers/labels.py", "def same_label(outputs):\n    return 0\n")
    result = select(proj)
    assert result.selected == ["other"]
    assert result.reasons["other"] == ["scorers/labels.py changed (evaluation same)"]


def _select_any(proj: Project) -> Selection:
    """As ``select``, for a config with problems lint would report (unknown keys): selection still works."""
    config, _ = read_config(proj.path("llmops.yaml"), environ=None)
    assert config is not None
    return select_flows(config, changed_files("main", proj.root))


def test_a_null_key_and_a_missing_key_differ(repo: Callable[..., Project]) -> None:
    proj = repo()
    _other_entry(proj, lambda text: text + "    description: null\n")
    assert _select_any(proj).reasons == {"other": ["llmops.yaml flows.other.description changed"]}
    commit(proj.root, "null description")
    git(proj.root, "branch", "-f", "main")
    _other_entry(proj, lambda text: text.replace("    description: null\n", ""))
    assert _select_any(proj).reasons == {"other": ["llmops.yaml flows.other.description changed"]}


def test_keys_that_are_not_strings_are_compared_too(repo: Callable[..., Project]) -> None:
    proj = repo()
    _other_entry(proj, lambda text: text + "    7: seven\n    x-note: n\n")
    result = _select_any(proj)
    assert result.reasons["other"] == ["llmops.yaml flows.other.7 changed", "llmops.yaml flows.other.x-note changed"]
    proj.write("llmops.yaml", proj.read("llmops.yaml") + "3: three\nextra: e\n")
    assert _select_any(proj).all_reason == \
        "llmops.yaml top-level '3', 'extra' changed"


def test_a_base_config_that_is_not_utf8_is_still_compared(repo: Callable[..., Project]) -> None:
    proj = repo()
    proj.path("llmops.yaml").write_bytes(b"# caf\xe9\n" + proj.path("llmops.yaml").read_bytes())
    commit(proj.root, "latin-1 comment")
    git(proj.root, "branch", "-f", "main")
    proj.write("llmops.yaml", TWO_FLOWS["llmops.yaml"])
    assert select(proj).selected == []  # only the comment changed


def test_the_top_is_found_from_the_config_not_the_working_directory(
        repo: Callable[..., Project], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = repo()
    proj.replace("llmops.yaml", "type: open_ai", "type: open_ai\n    organization: acme")
    config = load(proj)
    base = git(proj.root, "rev-parse", "main")
    elsewhere = tmp_path.parent / (tmp_path.name + "-cwd")
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = select_flows(config, {proj.path("llmops.yaml")}, base=base)
    assert result.all_reason == "llmops.yaml top-level 'connections' changed"


def test_an_evaluation_flows_include_is_labelled_with_the_evaluation(repo: Callable[..., Project]) -> None:
    dag = BASE_PROJECT["flows/eval/flow.dag.yaml"].rstrip(" ")
    proj = repo({"flows/eval/flow.dag.yaml": dag + "        additional_includes:\n        - ../shared/util.py\n"})
    proj.write("flows/shared/util.py", "X = 2\n")
    result = select(proj)
    assert result.reasons["classify"] == ["flows/shared/util.py changed (additional include of evaluation "
                                          "accuracy)"]


def test_a_run_file_with_inline_environment_variables(repo: Callable[..., Project]) -> None:
    run_yml = RUN_YML.replace("environment_variables: env/runner.env", "environment_variables:\n  MODE: a")
    proj = repo({"llmops.yaml": TWO_FLOWS["llmops.yaml"].rstrip(" ") + RUNNER, "runs/runner.yml": run_yml})
    proj.write("runs/runner.yml", run_yml.replace("MODE: a", "MODE: b"))
    assert select(proj).reasons == {"runner": ["runs/runner.yml changed (run_file)"]}


def test_select_flows_takes_a_project_as_well_as_a_config(repo: Callable[..., Project]) -> None:
    from llmops_ci.project.loaded import Project as LoadedProject

    proj = repo()
    proj.write("flows/other/new.py", "X = 1\n")
    loaded = LoadedProject(load(proj))
    result = select_flows(loaded, changed_files("main", proj.root))
    assert result.selected == ["other"] and result.reasons == {"other": ["flows/other/new.py changed"]}
