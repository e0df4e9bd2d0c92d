"""Whether a path can hold the state dir: checked before a step, creating nothing."""

from __future__ import annotations

from pathlib import Path

from llmops_ci.core.state_dir import state_dir_problem


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_folder_or_one_that_can_be_made_is_fine_and_nothing_is_created(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    before = listing(tmp_path)
    assert state_dir_problem(tmp_path / "state") is None
    assert state_dir_problem(tmp_path / "new" / "deeper" / "state") is None
    assert listing(tmp_path) == before


def test_what_cannot_hold_it_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x", encoding="utf-8")
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    cases = {tmp_path / "file": "is a file, not a folder",
             tmp_path / "file" / "state": f"cannot be made: {tmp_path / 'file'} is a file",
             tmp_path / "link": "is a link to nothing",
             tmp_path / "link" / "state": "is a link to nothing",
             Path("/proc/llmops-state"): "cannot write in /proc"}
    for path, said in cases.items():
        problem = state_dir_problem(path)
        assert problem is not None and problem.return_code == 2, path
        assert str(problem).startswith(f"--state-dir {path}: ") and said in str(problem), str(problem)
    assert (tmp_path / "file").read_text(encoding="utf-8") == "x"
