"""The documentation holds together: every relative link and anchor resolves, the lint rule reference is the
registry's, and README's commands are the ones CI uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmops_ci.lint.catalogue import markdown

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*/README.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to '-'."""
    anchors = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in _anchors(dest)):
            broken.append(target)
    assert broken == [], f"{doc.relative_to(ROOT)}: broken links {broken}"


def test_lint_rule_reference_is_generated_from_the_registry() -> None:
    assert (ROOT / "docs" / "lint-rules.md").read_text(encoding="utf-8") == markdown(), \
        "regenerate: python -m llmops_ci.lint.catalogue > docs/lint-rules.md"


def test_readme_install_and_test_commands_are_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").replace(" --quiet", "")
    install = re.search(r"python -m pip install -e \"[^\"]+\"", readme)
    assert install is not None and install.group(0) in ci
    agents = re.search(r"python -m pip install --target \S+ (agent-framework\S+ ?)+", readme)
    assert agents is not None and agents.group(0).strip() in ci and "LLMOPS_CI_AGENTS_PATH" in ci
    assert "python -m pytest" in readme and "\npython -m pytest" in ci
