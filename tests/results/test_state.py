from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops_ci.core.errors import UsageError
from llmops_ci.results.state import read_summary, update_summary


def test_update_is_atomic_and_merges(tmp_path: Path) -> None:
    update_summary(tmp_path / "s", "lint", {"findings": []})
    update_summary(tmp_path / "s", "flows", {"a": {}})
    assert json.loads((tmp_path / "s" / "summary.json").read_text()) == {
        "schema": "llmops-ci/summary@1", "lint": {"findings": []}, "flows": {"a": {}}}
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["summary.json"]


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text('{"other": 1}')
    with pytest.raises(UsageError, match="not an llmops-ci summary"):
        read_summary(tmp_path)
