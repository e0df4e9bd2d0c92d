from __future__ import annotations

import json

from llmops_ci.diagnostics.findings import RULES, finding
from llmops_ci.lint.formats import as_json, sarif, text
from llmops_ci.lint.project import LintReport

REPORT = LintReport([
    finding("node-ref-unknown", "flows/a/flow.dag.yaml", 14, 15, "node 'x' references node 'y'"),
    finding("input-unused", "flows/a/flow.dag.yaml", 3, 3, "flow input 'z' is not used"),
    finding("data-parse", "data/a.jsonl", None, None, "folder has no files"),
], flows_checked=2)


def test_text_groups_by_file_and_counts() -> None:
    out = text(REPORT)
    assert out.splitlines()[0] == "flows/a/flow.dag.yaml"
    assert "  14:15    error    node-ref-unknown" in out
    assert out.rstrip().splitlines()[-1] == "2 errors, 1 warning in 2 files (2 flows checked)."
    assert text(LintReport([], 1)).strip() == "No problems found (1 flow checked)."


def test_json_matches_the_spec_shape() -> None:
    data = json.loads(as_json(REPORT))
    assert list(data) == ["findings"]
    assert data["findings"][0] == {"rule": "node-ref-unknown", "severity": "error", "path": "flows/a/flow.dag.yaml",
                                   "line": 14, "column": 15, "message": "node 'x' references node 'y'"}
    assert data["findings"][2]["line"] is None


def test_sarif_2_1_0_for_code_scanning() -> None:
    doc = json.loads(sarif(REPORT))
    assert doc["version"] == "2.1.0"
    run = doc["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == list(RULES)
    assert all(r["shortDescription"]["text"] for r in rules)
    levels = [r["level"] for r in run["results"]]
    assert levels == ["error", "warning", "error"]
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        loc = result["locations"][0]["physicalLocation"]
        assert not loc["artifactLocation"]["uri"].startswith("/")
        assert loc["region"]["startLine"] >= 1
    assert run["results"][2]["locations"][0]["physicalLocation"]["region"] == {"startLine": 1}


def test_readme_documents_every_rule() -> None:
    from pathlib import Path

    # the rule table moved from the README to the generated docs/lint-rules.md (#27)
    readme = (Path(__file__).parents[2] / "docs" / "lint-rules.md").read_text(encoding="utf-8")
    for rule in RULES.values():
        assert f"| `{rule.id}` | {rule.severity} | " in readme  # the summaries: tests/test_docs.py
