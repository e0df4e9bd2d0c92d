"""Hostile state: NaN metrics, damaged baselines and summaries, and concurrent updates from real processes."""

from __future__ import annotations

import json
import math
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.core.errors import UsageError
from llmops_ci.results.state import atomic_writer, read_summary, update_flow, update_summary
from tests.conftest import CliResult, Project
from tests.gate.test_gate import gate_json, write_state
from tests.helpers.config import judged, raw_rules

Cli = Callable[..., CliResult]


@pytest.fixture
def gate_project(project: Callable[..., Project]) -> Callable[[str], Project]:
    def make(rules: str) -> Project:
        return project(config=judged(raw_rules(rules)), base=False)
    return make


def _strict(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_a_nan_metric_is_written_as_valid_json(tmp_path: Path) -> None:
    update_flow(tmp_path, "qa", "evaluations", {"judge": {"metrics": {"accuracy": math.nan, "p95": math.inf}}})
    data = _strict((tmp_path / "summary.json").read_text())
    assert data == {"schema": "llmops-ci/summary@1",
                    "flows": {"qa": {"evaluations": {"judge": {"metrics": {"accuracy": None, "p95": None}}}}}}


def test_summary_is_world_readable_and_no_temp_files_stay(tmp_path: Path) -> None:
    update_summary(tmp_path, "lint", {"findings": []})
    assert stat.S_IMODE((tmp_path / "summary.json").stat().st_mode) == 0o644
    with pytest.raises(RuntimeError), atomic_writer(tmp_path / "x.json") as fh:
        fh.write("half")
        raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


@pytest.mark.parametrize("metric", ["NaN", "null", '"n/a"', "Infinity"])
@pytest.mark.parametrize("rule", ["{min: 0.5}", "{max_drop: 0.05}", "{max: 0.9}", "{min: 0.1, max_drop: 0.5}"])
def test_a_metric_that_is_no_number_fails_every_rule(metric: str, rule: str, cli: Cli,
                                                      gate_project: Callable[[str], Project]) -> None:
    proj = gate_project(f"      judge.accuracy: {rule}\n")
    for state in (".llmops", "base"):
        root = write_state(proj.path(state), {i: 1.0 for i in range(12)})
        if state == ".llmops":  # as an older version or another tool wrote it: NaN is not JSON
            text = (root / "summary.json").read_text().replace('"accuracy": 1.0', f'"accuracy": {metric}')
            (root / "summary.json").write_text(text)
    result = cli("gate", "--baseline", "base")
    assert result.code == 1, result.err
    checks = gate_json(proj)["checks"]
    assert checks and all(c["passed"] is False and "not a number" in c["note"] for c in checks)
    _strict(proj.read(".llmops/summary.json"))


def test_a_nan_baseline_is_no_baseline(cli: Cli, gate_project: Callable[[str], Project]) -> None:
    proj = gate_project("      judge.accuracy: {max_drop: 0.05}\n")
    write_state(proj.path(".llmops"), {i: 1.0 for i in range(12)})
    base = write_state(proj.path("base"), {i: 1.0 for i in range(12)})
    (base / "summary.json").write_text((base / "summary.json").read_text().replace('"accuracy": 1.0',
                                                                                   '"accuracy": NaN'))
    assert cli("gate", "--baseline", "base").code == 0
    (check,) = gate_json(proj)["checks"]
    assert check["passed"] is True and check["baseline"] is None


@pytest.mark.parametrize(("lines", "says"), [
    ('{"line": 0, "status": "Completed", "outputs": {"correct": 1}}\n{"line": 1, "stat',
     "lines.jsonl:2: not a JSON line"),
    ('[1, 2]\n', "lines.jsonl:1: not a line result"),
    ('{"line": "zero", "status": "Completed"}\n', "lines.jsonl:1: not a line result"),
    ('{"line": 1, "outputs": {"correct": ' + "9" * 5000 + "}}\n", "lines.jsonl:1: not a JSON line"),
])
def test_a_damaged_baseline_lines_file_is_exit_2(lines: str, says: str, cli: Cli,
                                                 gate_project: Callable[[str], Project]) -> None:
    proj = gate_project("      judge.accuracy: {max_drop: 0.05}\n")
    write_state(proj.path(".llmops"), {i: 1.0 for i in range(12)})
    base = write_state(proj.path("base"), {i: 1.0 for i in range(12)})
    (base / "runs" / "qa" / "evals" / "judge" / "lines.jsonl").write_text(lines)
    result = cli("gate", "--baseline", "base")
    assert result.code == 2 and says in result.err and "Traceback" not in result.err


@pytest.mark.parametrize("summary", [
    {"schema": "llmops-ci/summary@1", "flows": []},
    {"schema": "llmops-ci/summary@1", "flows": {"qa": []}},
    {"schema": "llmops-ci/summary@1", "flows": {"qa": {"evaluations": []}}},
    {"schema": "llmops-ci/summary@1", "flows": {"qa": {"evaluations": {"judge": {"metrics": [1]}}}}},
    {"schema": "llmops-ci/summary@1", "flows": {"qa": {"run": "done"}}},
    {"schema": "llmops-ci/summary@1", "lint": {"findings": {}}},
    [],
])
def test_a_misshapen_summary_is_exit_2(summary: object, tmp_path: Path, cli: Cli,
                                       gate_project: Callable[[str], Project]) -> None:
    proj = gate_project("      judge.accuracy: {max_drop: 0.05}\n")
    write_state(proj.path(".llmops"), {i: 1.0 for i in range(12)})
    write_state(proj.path("base"), {})
    proj.path("base/summary.json").write_text(json.dumps(summary))
    result = cli("gate", "--baseline", "base")
    assert result.code == 2 and "base/summary.json" in result.err and "Traceback" not in result.err
    proj.path(".llmops/summary.json").write_text(json.dumps(summary))
    with pytest.raises(UsageError):
        read_summary(proj.path(".llmops"))
    for step in (("gate",), ("comment",)):
        result = cli(*step)
        assert result.code in (0, 2) and "Traceback" not in result.err, result.err


def test_huge_numbers_and_deep_nesting_in_a_summary(tmp_path: Path) -> None:
    for text in ('{"schema": "llmops-ci/summary@1", "n": ' + "1" * 5000 + "}", "[" * 100_000 + "]" * 100_000):
        (tmp_path / "summary.json").write_text(text)
        with pytest.raises(UsageError):
            read_summary(tmp_path)


WRITER = """
import sys
from pathlib import Path
from llmops_ci.results.store import update_flow_summary
state, flow, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(rounds):
    update_flow_summary(state, flow, "run", {"round": i})
    update_flow_summary(state, flow, "evaluations", {f"e{i}": {"metrics": {"m": i}}})
"""


def test_concurrent_updates_from_real_processes_lose_nothing(tmp_path: Path) -> None:
    """Eight processes, each updating its own flow 2 x 25 times: every flow and every evaluation survives."""
    flows, rounds = [f"f{i}" for i in range(8)], 25
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), flow, str(rounds)])
             for flow in flows]
    assert [p.wait(timeout=120) for p in procs] == [0] * len(flows)
    data = read_summary(tmp_path)
    assert sorted(data["flows"]) == flows
    for flow in flows:
        assert data["flows"][flow]["run"] == {"round": rounds - 1}
        assert sorted(data["flows"][flow]["evaluations"]) == sorted(f"e{i}" for i in range(rounds))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


@pytest.mark.parametrize(("field", "value"), [
    ("llm_cache", '{"hits": 1e999, "misses": 0}'), ("llm_cache", '{"hits": "42", "misses": 0}'),
    ("llm_cache", '{"hits": null, "misses": 0}'), ("llm_cache", '[1]'), ("lines_total", "1e999"),
    ("lines_failed", '"x"'), ("duration_s", "[]"),
])
def test_a_tampered_baseline_carried_over_is_exit_2(field: str, value: str, cli: Cli,
                                                    gate_project: Callable[[str], Project]) -> None:
    """A baseline's results are carried into the state dir by --changed-since; wrong types in them are bad input."""
    proj = gate_project("      judge.accuracy: {max_drop: 0.05}\n")
    state = write_state(proj.path(".llmops"), {i: 1.0 for i in range(12)})
    data = json.loads((state / "summary.json").read_text())
    data["flows"]["qa"]["run"] = {"name": "r", "status": "completed", "lines_total": 12, "lines_failed": 0,
                                  field: "@@"}
    (state / "summary.json").write_text(json.dumps(data).replace('"@@"', value))
    for step in (("comment", "--platform", "local"), ("gate",)):
        result = cli(*step)
        assert result.code == 2, (step, result.err)
        assert "summary.json" in result.err and field in result.err and "Traceback" not in result.err


@pytest.mark.parametrize(("error", "code", "says"), [
    (28, 3, "No space left on device"),  # ENOSPC
    (30, 2, "Read-only file system"),  # EROFS
    (13, 2, "Permission denied"),  # EACCES
])
def test_a_full_or_read_only_disk_is_a_clear_message(error: int, code: int, says: str, cli: Cli,
                                                     project: Callable[..., Project],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import tempfile

    project()

    def refuse(*args: object, dir: str | None = None, **kwargs: object) -> object:
        raise OSError(error, os.strerror(error), dir)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    result = cli("lint")
    assert result.code == code, result.err
    assert says in result.err and "--state-dir" in result.err
    assert "a bug" not in result.err and "Traceback" not in result.err


@pytest.mark.parametrize("checks", ["[1e999]", '["x"]', "[null]", '"all passed"'])
def test_tampered_gate_checks_are_exit_2(checks: str, cli: Cli, gate_project: Callable[[str], Project]) -> None:
    proj = gate_project("      judge.accuracy: {max_drop: 0.05}\n")
    state = write_state(proj.path(".llmops"), {i: 1.0 for i in range(12)})
    data = json.loads((state / "summary.json").read_text())
    data["flows"]["qa"]["gate"] = {"passed": True, "checks": "@@"}
    (state / "summary.json").write_text(json.dumps(data).replace('"@@"', checks))
    result = cli("comment", "--platform", "local")
    assert result.code == 2 and "gate.checks" in result.err and "Traceback" not in result.err
