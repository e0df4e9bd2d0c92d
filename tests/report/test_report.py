from __future__ import annotations

import json
import re
from pathlib import Path

from llmops_ci.report.comment import DEFAULT_LIMIT, MARKER, outcome, render
from llmops_ci.results.summary import Summary


def summary_with(flows: int = 1, findings: int = 0, failed_gate: bool = False) -> dict:
    data: dict = {"schema": "llmops-ci/summary@1", "flows": {}}
    for i in range(flows):
        data["flows"][f"flow-{i:03d}"] = {
            "run": {"name": f"r{i}", "status": "failed" if i == 0 else "completed", "lines_total": 50,
                    "lines_failed": 2 if i == 0 else 0, "duration_s": 12.3, "latency_p50": 0.2, "latency_p95": 0.9,
                    "tokens": {"prompt": 900, "completion": 100, "total": 1000},
                    "errors": [{"line": 3, "node": "chat", "message": "boom <b>@octocat</b> " + "x" * 400}] * 2},
            "evaluations": {"acc": {"run": "e", "status": "completed", "metrics": {"accuracy": 0.84}}},
            "gate": {"passed": not failed_gate, "checks": [
                {"metric": "acc.accuracy", "value": 0.84, "baseline": 0.86, "delta": -0.02, "rule": "max_drop",
                 "limit": 0.03, "passed": not failed_gate, "verdict": "inconclusive",
                 "interval": [-0.05, 0.01], "lines": 50}]},
        }
    data["lint"] = {"findings": [
        {"rule": "node-ref-unknown" if i % 3 else "input-unused", "severity": "error" if i % 3 else "warning",
         "path": f"flows/f{i}/flow.dag.yaml", "line": i + 1, "column": 3, "message": f"problem number {i} " + "y" * 80}
        for i in range(findings)]}
    return data


def test_sections_and_headline() -> None:
    body = render(Summary.parse(summary_with(findings=3, failed_gate=True)), run_url="https://ci/run/1")
    assert body.startswith(MARKER + "\n\n## ❌ llmops-ci: 2 lint errors; run of flow-000 failed; "
                           "gate of flow-000 failed")
    for heading in ("### Gate", "### Runs", "### Evaluations", "### Lint"):
        assert heading in body
    row = ("| `flow-000` | acc\\.accuracy | 0.84 | 0.86 | -0.02 | [-0.05, 0.01] | - | max_drop 0.03 | inconclusive "
           "| ❌ |")
    assert row in re.sub(r" +", " ", body)
    assert "<b>" not in body and "@octocat" not in body
    assert body.rstrip().endswith("[CI run](https://ci/run/1)")


def test_sections_for_steps_that_did_not_run_are_left_out() -> None:
    body = render(Summary.parse({"schema": "llmops-ci/summary@1", "lint": {"findings": []}}))
    assert "### Lint\n\n0 errors, 0 warnings ✅" in body
    assert "### Runs" not in body and "### Gate" not in body
    assert outcome(Summary.parse({"schema": "x", "lint": {"findings": []}})).passed
    # round 3 (#20 item 6): an empty summary is "nothing ran", never a pass
    nothing = outcome(Summary.parse({"schema": "x"}))
    assert not nothing.passed and nothing.nothing_ran


def test_a_pass_says_what_stood_behind_it() -> None:
    def headline(flows: dict) -> str:
        return str(outcome(Summary.parse({"schema": "x", "lint": {"findings": []}, "flows": flows})).headline)

    run = {"status": "completed", "lines_total": 3, "lines_failed": 0}
    checked = {"metric": "e.m", "rule": "min", "passed": True, "value": 0.9, "limit": 0.8}
    unchecked = {"metric": "e.m", "rule": "max_drop", "passed": True, "value": 0.9, "verdict": "no baseline"}
    assert headline({"f": {"run": run, "gate": {"passed": True, "checks": [checked]}}}) == \
        "✅ llmops-ci: all checks passed"
    assert headline({"f": {"run": run, "gate": {"passed": True, "checks": [checked, unchecked]}},
                     "g": {"run": run, "gate": {"passed": True, "checks": [unchecked]}}}) == \
        "✅ llmops-ci: all checks passed (2 rules against a baseline not checked: no baseline)"
    assert headline({"f": {"unchanged": {"since": "main", "carried_over": False}}}) == \
        "✅ llmops-ci: lint passed; no flow changed since main, so none was run or gated"
    assert headline({"f": {"unchanged": {"since": "main", "carried_over": True}, "run": run}}) == \
        "✅ llmops-ci: all checks passed"


def test_huge_report_fits_and_says_where_the_rest_is() -> None:
    data = summary_with(flows=200, findings=5000, failed_gate=True)
    body = render(Summary.parse(data))
    assert len(body) <= DEFAULT_LIMIT
    assert body.startswith(MARKER)
    assert "full report is in the job summary and the state dir artifact" in body
    assert "❌" in body.splitlines()[2]
    assert len(render(Summary.parse(data), limit=2000)) <= 2000


def test_renders_a_real_state_dir(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps(summary_with()))
    assert "flow-000" in render(Summary.parse(json.loads((tmp_path / "summary.json").read_text())))


def gate_summary() -> dict:
    checks = [
        {"metric": "run.lines_failed", "value": 0, "baseline": None, "rule": "max", "limit": 0, "passed": True,
         "verdict": None},
        {"metric": "math.accuracy", "value": 0.2, "baseline": 0.75, "delta": -0.55, "rule": "max_drop", "limit": 0.05,
         "passed": False, "verdict": "degraded", "interval": [-1.5, -0.7], "line_delta": -1.1,
         "interval_of": "mean per-line difference of 'score'", "significant": True, "lines": 20},
    ]
    return {"schema": "llmops-ci/summary@1", "flows": {"chat-math": {
        "gate": {"passed": False, "checks": checks},
        "run": {"name": "r", "status": "failed", "lines_total": 3, "lines_failed": 3, "errors": [],
                "error": "PythonLoadError: Failed to load python module from file 'flows/py/ask.py'"}}},
        "lint": {"findings": [{"rule": "mapping-invalid", "severity": "error", "path": "llmops.yaml", "line": 3,
                               "column": 1, "message": "'${data.question}' is not run.lines_failed"}]}}


def test_terminal_report_is_plain_text_with_failing_gate_rows_first() -> None:
    from llmops_ci.report.comment import render_text

    text = render_text(Summary.parse(gate_summary()))
    assert "\\" not in text and "<details>" not in text and MARKER not in text and "**" not in text
    assert "'${data.question}' is not run.lines_failed" in text
    rows = [line for line in text.splitlines() if line.startswith("chat-math ")]
    assert "math.accuracy" in rows[0] and "run.lines_failed" in rows[1]  # the failing row first
    assert "max_drop 0.05, significant: true" in rows[0]
    # the interval comes with its own point value on the per-line scale; Δ is the metric's
    assert "-0.55" in rows[0] and "-1.1 [-1.5, -0.7] per line" in rows[0]
    assert "the run failed: PythonLoadError: Failed to load python module from file 'flows/py/ask.py'" in text


def test_comment_shows_the_run_error_and_no_interval_on_threshold_rows() -> None:
    body = render(Summary.parse(gate_summary()))
    assert "the run failed: PythonLoadError" in body
    threshold = next(line for line in body.splitlines() if "run\\.lines\\_failed" in line)
    assert "[" not in threshold.split("|")[6]


def test_headline_is_one_line_with_counts_and_the_worst_failure() -> None:
    # #27: never a list cut off with "… …": how many of each kind, and the worst one
    data = summary_with(flows=6, findings=3, failed_gate=True)
    data["steps"] = {"eval-run": {"exit_code": 3, "error": "the endpoint did not answer"}}
    head = outcome(Summary.parse(data)).headline
    assert "\n" not in head and "…" not in head and len(head) < 260
    assert head.startswith("❌ llmops-ci: 9 problems (1 steps stopped, 1 runs failed, 6 gates failed, 2 lint errors)")
    assert head.endswith("worst: eval-run stopped (exit 3): the endpoint did not answer")
    # a few short problems are said as they are
    assert outcome(Summary.parse(summary_with(failed_gate=True))).headline == (
        "❌ llmops-ci: run of flow-000 failed; gate of flow-000 failed")


def test_every_table_column_has_a_heading() -> None:
    data = summary_with(flows=2)
    data["flows"]["flow-001"]["register"] = {"name": "m", "version": "abc"}
    data["flows"]["flow-001"]["deploy"] = {"endpoint": "ep", "status": "deployed", "traffic": {"blue": 100}}
    body = render(Summary.parse(data))
    for heading in ("### Gate", "### Runs", "### Release"):
        header = body.split(heading, 1)[1].strip().splitlines()[0]
        cells = [c.strip() for c in header.strip("|").split("|")]
        assert all(cells), (heading, header)


def test_numbers_are_rounded_alike_in_log_and_tables() -> None:
    from llmops_ci.core.log import number

    summary = summary_with()
    summary["flows"]["flow-000"]["evaluations"]["acc"]["metrics"]["accuracy"] = 2 / 3
    assert number(2 / 3) == "0.6667" and "| 0.6667 |" in re.sub(r" +", " ", render(Summary.parse(summary)))
    assert number(2.4812, 3) == "2.48" and number(None) == "-" and number(42) == "42"


def test_comment_shows_lines_scored_wrong_commit_links_variant_and_lines_scored() -> None:
    data = summary_with(flows=2)
    flow = data["flows"]["flow-001"]
    flow["run"]["variant"] = "${chat.variant_1}"
    flow["gate"]["provenance"] = {"commit": "0123456789abcdef0123"}
    flow["evaluations"]["acc"].update({"lines_total": 50, "lines_failed": 2, "scored_wrong": {
        "scored": 48, "wrong": 3, "first": [{"line_number": 7, "input": "text: a @octocat page", "score": "ok: 0",
                                             "evaluated": "groundtruth: Movie, prediction: None"}]}})
    body = render(Summary.parse(data), run_url="https://ci/run/1", artifacts_url="https://ci/run/1#artifacts")
    flat = re.sub(r" +", " ", body)
    assert "### Lines that changed verdict or scored wrong" in body and "@octocat" not in body
    assert "<details><summary>`flow-001/acc`: 3 of 48 lines scored wrong (first 1)</summary>" in body
    assert "| 7 | text: a " in flat
    assert "groundtruth: Movie, prediction: None" in body
    assert "| `flow-001` | `acc` | accuracy | 0.84 | 48 of 50 |" in flat  # lines scored of lines run
    assert "| `flow-001` ($\\{chat\\.variant\\_1\\}) | ✅ |" in flat  # the variant that ran
    assert body.rstrip().endswith("[CI run](https://ci/run/1) · [artifacts](https://ci/run/1#artifacts) · commit "
                                  "`0123456789ab`")


def test_azure_devops_build_url() -> None:
    from llmops_ci.platforms.azure_devops import build_url

    env = {"SYSTEM_COLLECTIONURI": "https://dev.azure.com/org/", "SYSTEM_TEAMPROJECT": "My Project",
           "BUILD_BUILDID": "42"}
    assert build_url(env) == "https://dev.azure.com/org/My%20Project/_build/results?buildId=42"
    assert build_url({**env, "BUILD_BUILDID": "x"}) is None and build_url({}) is None


def test_comment_shows_lines_that_changed_verdict_against_the_baseline() -> None:
    data = summary_with()
    data["flows"]["flow-000"]["gate"]["changed_lines"] = {"acc.accuracy": {"paired": 50, "changed": 2, "first": [
        {"line_number": 4, "input": "url: https://x/4", "was": 1.0, "now": 0.0},
        {"line_number": 9, "input": "url: https://x/9", "was": 0.0, "now": 1.0}]}}
    body = render(Summary.parse(data))
    assert "`flow-000` acc\\.accuracy: 2 of 50 paired lines scored otherwise than the baseline" in body
    assert "| 4 | url: https://x/4 | 1 | 0 |" in re.sub(r" +", " ", body)
