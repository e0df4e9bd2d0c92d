"""No copy follows a link out of the project (snapshots, register, the Azure ML upload list, baseline carry-over);
lint names such a link where it is, and a loop is a located error."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.core.errors import UsageError
from llmops_ci.core.safe_copy import LinkLoop, LinkOutside, copy_tree, set_project_root
from llmops_ci.kinds import snapshot_of
from llmops_ci.results.store import mark_unchanged
from tests.helpers.projects import CliResult, Project

Cli = Callable[..., CliResult]
SECRET = "GITHUB_TOKEN=ghs_planted0123456789abcdefghijklmnop"


@pytest.fixture(autouse=True)
def _forget_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llmops_ci.core.safe_copy._root", None)


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("elsewhere") / "environ"
    path.write_text(SECRET + "\n", encoding="utf-8")
    return path


def test_lint_names_a_link_out_and_a_loop_where_they_are(cli: Cli, project: Callable[..., Project],
                                                         outside: Path) -> None:
    proj = project()
    proj.path("flows/classify/env.txt").symlink_to(outside)
    proj.path("flows/eval/loop").symlink_to(".")
    proj.write("shared/notes.txt", "inside\n")
    proj.path("flows/classify/notes.txt").symlink_to(proj.path("shared/notes.txt"))  # inside the project: fine
    result = cli("lint", "--format", "json")
    assert result.code == 1
    found = {(f["rule"], f["path"]) for f in json.loads(result.out)["findings"]}
    assert found == {("path-outside", "flows/classify/env.txt"), ("link-loop", "flows/eval/loop")}
    assert SECRET not in result.out


@pytest.mark.parametrize("kind_files", [
    {},  # the base project's DAG flow
    {"flows/classify/flow.dag.yaml": None, "flows/classify/flow.flex.yaml": "entry: clean:clean\n"},
])
def test_snapshots_refuse_a_link_out(project: Callable[..., Project], outside: Path, tmp_path: Path,
                                     kind_files: dict[str, str | None]) -> None:
    proj = project()
    for rel, text in kind_files.items():
        if text is None:
            proj.path(rel).unlink()
        else:
            proj.write(rel, text)
    set_project_root(proj.root)
    proj.write("shared/notes.txt", "inside\n")
    proj.path("flows/classify/notes.txt").symlink_to(proj.path("shared/notes.txt"))
    copy = snapshot_of(proj.path("flows/classify"), tmp_path / "snap-ok").folder
    assert (copy / "notes.txt").read_text() == "inside\n" and not (copy / "notes.txt").is_symlink()
    proj.path("flows/classify/env.txt").symlink_to(outside)
    with pytest.raises(LinkOutside, match=r"flows/classify/env\.txt"):
        snapshot_of(proj.path("flows/classify"), tmp_path / "snap-out")
    assert not any(SECRET in p.read_text(errors="replace") for p in (tmp_path / "snap-out").rglob("*") if p.is_file())
    proj.path("flows/classify/env.txt").unlink()
    proj.path("flows/classify/loop").symlink_to(".")
    with pytest.raises(LinkLoop):
        snapshot_of(proj.path("flows/classify"), tmp_path / "snap-loop")


def test_a_prompty_snapshot_refuses_a_link_out(project: Callable[..., Project], outside: Path,
                                               tmp_path: Path) -> None:
    proj = project({"flows/p/a.prompty": "---\nname: a\nmodel:\n  api: chat\n---\nuser:\n{{text}}\n"}, base=False)
    set_project_root(proj.root)
    proj.path("flows/p/key.txt").symlink_to(outside)
    with pytest.raises(LinkOutside):
        snapshot_of(proj.path("flows/p/a.prompty"), tmp_path / "snap")


def test_a_loop_or_link_out_is_exit_2_not_a_crash(cli: Cli, project: Callable[..., Project], outside: Path) -> None:
    proj = project()
    proj.path("flows/classify/env.txt").symlink_to(outside)
    result = cli("batch-run", "--backend", "azureml", "--dry-run")  # the upload list of the Azure ML run
    assert result.code == 2, result.err
    assert "flows/classify/env.txt" in result.err and SECRET not in result.out + result.err
    proj.path("flows/classify/env.txt").unlink()
    proj.path("flows/classify/loop").symlink_to(".")
    result = cli("batch-run", "--backend", "azureml", "--dry-run")
    assert result.code == 2 and "flows/classify/loop" in result.err and "Traceback" not in result.err


def test_copy_tree_never_reads_special_files_or_loops(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("a")
    (src / "sub" / "up").symlink_to("..")
    with pytest.raises(UsageError, match="loop"):
        copy_tree(src, tmp_path / "dest", root=src)
    (src / "sub" / "up").unlink()
    (src / "sub" / "zero").symlink_to("/dev/zero")
    with pytest.raises(LinkOutside):
        copy_tree(src, tmp_path / "dest2", root=src)


def test_baseline_carry_over_never_follows_a_planted_link(tmp_path: Path, outside: Path) -> None:
    baseline, state = tmp_path / "baseline", tmp_path / "state"
    (baseline / "runs" / "classify").mkdir(parents=True)
    (baseline / "summary.json").write_text(json.dumps({"schema": "llmops-ci/summary@1", "flows": {"classify": {
        "run": {"name": "r1", "status": "completed", "lines_total": 1, "lines_failed": 0}}}}))
    (baseline / "runs" / "classify" / "lines.jsonl").write_text('{"line_number": 0}\n')
    (baseline / "runs" / "classify" / "env.txt").symlink_to(outside)
    state.mkdir()
    assert mark_unchanged(state, "classify", "main", None, baseline)
    assert (state / "runs" / "classify" / "lines.jsonl").is_file()
    assert not (state / "runs" / "classify" / "env.txt").exists()


def test_an_include_out_of_the_project_is_never_copied(project: Callable[..., Project], outside: Path,
                                                       tmp_path: Path) -> None:
    proj = project()
    set_project_root(proj.root)
    rel = os.path.relpath(outside, proj.path("flows/classify"))
    proj.replace("flows/classify/flow.dag.yaml", "inputs:\n", f"additional_includes:\n- {rel}\ninputs:\n")
    with pytest.raises(UsageError, match="outside the project"):
        snapshot_of(proj.path("flows/classify"), tmp_path / "snap")
    assert not any(SECRET in p.read_text(errors="replace") for p in (tmp_path / "snap").rglob("*") if p.is_file())


def test_a_folder_read_whole_never_reads_through_a_link_out(cli: Cli, project: Callable[..., Project],
                                                            outside: Path) -> None:
    """A data folder (prompt flow reads every file in it) or the cassettes folder holding a link out of the project:
    the link is refused where it is, before anything is read (its content would land in lines.jsonl)."""
    proj = project()
    proj.write("data/batch/a.jsonl", proj.read("data/classify.jsonl"))
    proj.path("data/batch/b.jsonl").symlink_to(outside)
    proj.replace("llmops.yaml", "data: data/classify.jsonl", "data: data/batch")
    for step in ("lint", "batch-run"):
        result = cli(step)
        assert result.code == (1 if step == "lint" else 2), result.err
        said = result.out + result.err
        assert "'data/batch/b.jsonl' in 'data/batch'" in said and SECRET not in said
        assert ("path-outside" if step == "lint" else "llmops.yaml:10") in said
    assert not proj.path(".llmops/runs/classify/lines.jsonl").exists()
    proj.path("data/batch/b.jsonl").unlink()
    proj.write("shared/more.jsonl", proj.read("data/classify.jsonl"))
    proj.path("data/batch/b.jsonl").symlink_to(proj.path("shared/more.jsonl"))  # inside the project: fine
    assert cli("lint").code == 0
    proj.write("cassettes/ok.json", "{}\n")
    proj.path("cassettes/planted.json").symlink_to(outside)
    proj.replace("llmops.yaml", "flows:\n", "llm_cache:\n  dir: cassettes\nflows:\n")
    result = cli("lint")
    assert result.code == 1 and "'cassettes/planted.json' in 'cassettes'" in result.out


def test_a_smoke_test_through_a_link_out_is_refused(project: Callable[..., Project], outside: Path) -> None:
    from llmops_ci.config import read_config
    from llmops_ci.releases.spec import load_smoke_tests

    proj = project()
    proj.write("smoke/ok.json", '{"text": "hello"}\n')
    proj.replace("llmops.yaml", "    path: flows/classify\n", "    path: flows/classify\n    deploy:\n"
                 "      endpoint: ep\n      smoke_tests: smoke/*.json\n")
    config, problems = read_config(proj.path("llmops.yaml"), None)
    assert config is not None and not problems
    assert len(load_smoke_tests(config, config.flows["classify"])) == 1
    outside.write_text('{"text": "' + SECRET + '"}\n', encoding="utf-8")
    proj.path("smoke/planted.json").symlink_to(outside)
    with pytest.raises(UsageError, match=r"smoke/planted\.json: a smoke test of flow 'classify' that leads out"):
        load_smoke_tests(config, config.flows["classify"])
