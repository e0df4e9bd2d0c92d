"""docs/lint-rules.md, generated from the rule registry: ``python -m llmops_ci.lint.catalogue > docs/lint-rules.md``.

A test keeps the file equal to what this prints, so a rule cannot be added, changed or removed without the
reference following.
"""

from __future__ import annotations

import sys

import llmops_ci.lint.project  # noqa: F401  (the whole linter: every module that declares rules)
from llmops_ci.diagnostics.findings import Rule, all_rules
from llmops_ci.kinds import KINDS

HEADER = """\
# Lint rules

`llmops-ci lint` checks llmops.yaml, run.yml files, every flow of every kind, their prompts, tool code, data
and mappings, without importing prompt flow, MLflow, Azure or Agent Framework and without running flow code.
An error exits 1 (a check failed); warnings are reported and exit 0. Every finding names its file and line
(1-based) and, where it can, the nearest valid value.

This page is generated from the rule registry (`python -m llmops_ci.lint.catalogue > docs/lint-rules.md`);
a test keeps it in step with the code.
"""


def _table(rules: list[Rule]) -> list[str]:
    rows = ["| rule | severity | what it finds |", "|---|---|---|"]
    rows += ["| `" + r.id + "` | " + r.severity + " | " + r.summary.replace("|", "\\|") + " |" for r in rules]
    return rows


def markdown() -> str:
    catalogue = all_rules()
    by_kind: dict[str, list[Rule]] = {}
    owned: set[str] = set()
    for name, kind in KINDS.items():
        rules = [catalogue[r.id] for r in kind.rules() if r.id not in owned]
        owned |= {r.id for r in rules}
        by_kind[name] = rules
    lines = [HEADER, "## Project rules (config, data, mappings, connections, gate, secrets)", ""]
    lines += _table([r for r in catalogue.values() if r.id not in owned])
    for name, rules in by_kind.items():
        if rules:
            lines += ["", f"## Kind `{name}`", "", *_table(rules)]
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
