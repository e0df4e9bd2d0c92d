"""Lint reports as text (for people), JSON (SPEC) and SARIF 2.1.0 (GitHub code scanning)."""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import groupby
from pathlib import PurePath
from typing import Any

from llmops_ci import __version__
from llmops_ci.diagnostics.findings import ERROR, WARNING, all_rules
from llmops_ci.lint.project import LintReport

INFORMATION_URI = "https://github.com/org/llmops-ci#lint-rules"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def text(report: LintReport) -> str:
    lines: list[str] = []
    for path, group in groupby(report.findings, key=lambda f: f.path):
        lines.append(path)
        for f in group:
            where = f"{f.line or '-'}:{f.column or '-'}" if f.line else "-"
            lines.append(f"  {where:<8} {f.severity:<8} {f.rule:<24} {f.message}")
        lines.append("")
    files = len({f.path for f in report.findings})
    checked = _plural(report.flows_checked, "flow") + (
        f" and {_plural(report.evaluations_checked, 'evaluation')}" if report.evaluations_checked else "") + " checked"
    if not report.findings:
        lines.append(f"No problems found ({checked}).")
    else:
        lines.append(f"{_plural(report.errors, 'error')}, {_plural(report.warnings, 'warning')} in "
                     f"{_plural(files, 'file')} ({checked}).")
    return "\n".join(lines) + "\n"


def as_json(report: LintReport) -> str:
    return json.dumps({"findings": [f.to_json() for f in report.findings]}, indent=2) + "\n"


def sarif(report: LintReport) -> str:
    catalogue = all_rules()
    rule_ids = list(catalogue)
    rules = [{
        "id": r.id,
        "name": "".join(part.capitalize() for part in r.id.split("-")),
        "shortDescription": {"text": r.summary},
        "helpUri": INFORMATION_URI,
        "defaultConfiguration": {"level": "error" if r.severity == ERROR else "warning"},
        "properties": {"tags": ["llmops", "promptflow"]},
    } for r in catalogue.values()]
    results: list[dict[str, Any]] = []
    for f in report.findings:
        region = {"startLine": f.line or 1}
        if f.column:
            region["startColumn"] = f.column
        results.append({
            "ruleId": f.rule,
            "ruleIndex": rule_ids.index(f.rule),
            "level": "error" if f.severity == ERROR else "warning" if f.severity == WARNING else "note",
            "message": {"text": f.message},
            "locations": [{"physicalLocation": {
                "artifactLocation": {"uri": PurePath(f.path).as_posix(), "uriBaseId": "%SRCROOT%"},
                "region": region,
            }}],
        })
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "llmops-ci", "version": __version__, "semanticVersion": __version__,
                                "informationUri": INFORMATION_URI, "rules": rules}},
            "results": results,
        }],
    }
    return json.dumps(doc, indent=2) + "\n"


FORMATS: dict[str, Callable[[LintReport], str]] = {"text": text, "json": as_json, "sarif": sarif}
