"""Which flows lint errors stop: a flow with errors of its own or in its evaluations; the others still run."""

from __future__ import annotations

from llmops_ci.config import FlowSpec
from llmops_ci.core.errors import Problem
from llmops_ci.diagnostics.findings import ERROR
from llmops_ci.lint.project import LintRequest, lint
from llmops_ci.project.loaded import Project


def lint_blocks(project: Project, flows: list[FlowSpec]) -> dict[str, list[Problem]]:
    """The lint errors that stop each flow: its own (entry, files, data, mappings) and its evaluations'. A flow
    without any runs; errors of the whole config (a literal secret, say) stop every flow."""
    blocked: dict[str, list[Problem]] = {}
    for flow in flows:
        report = lint(LintRequest(config=project.config.path, flows=(flow.name,)), project)
        errors = [Problem(f.path, f.line, f.column, f"{f.message} [{f.rule}]", f.rule)
                  for f in report.findings if f.severity == ERROR]
        if errors:
            blocked[flow.name] = errors
    return blocked
