"""Deeply nested Python tools and Jinja templates: a located lint finding, never a RecursionError."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.kinds.dag.python_tool import ToolFileError, read_tool
from llmops_ci.kinds.jinja import TemplateSyntax, template_vars
from tests.conftest import CliResult, Project

TOOL = "from promptflow.core import tool\n\n\n@tool\ndef clean(text: str) -> str:\n    return text\n"


@pytest.mark.parametrize("source", [
    "x = " + "-" * 100_000 + "1\n",
    "x = " + "+".join(["1"] * 200_000) + "\n",
    "x = " + "lambda: " * 5000 + "1\n",
    "x = " + "(" * 5000 + ")" * 5000 + "\n",
    "x = 1\x00\n",
])
def test_deep_python_is_a_syntax_finding(tmp_path: Path, source: str) -> None:
    path = tmp_path / "tool.py"
    path.write_text(TOOL + source, encoding="utf-8")
    with pytest.raises(ToolFileError) as err:
        read_tool(path)
    assert err.value.rule == "tool-syntax" and err.value.line is not None


@pytest.mark.parametrize("source", [
    "{{ " + "(" * 5000 + "x" + ")" * 5000 + " }}",
    "{% if x %}" * 2000 + "{% endif %}" * 2000,
    "{{ " + "+".join(["x"] * 50_000) + " }}",
    "{{ x" + "|upper" * 20_000 + " }}",
])
def test_deep_jinja_is_a_syntax_finding(source: str) -> None:
    with pytest.raises(TemplateSyntax) as err:
        template_vars(source)
    assert "nested too deeply" in err.value.message


def test_deep_files_through_lint(project: Callable[..., Project], cli: Callable[..., CliResult]) -> None:
    proj = project()
    proj.write("flows/classify/clean.py", TOOL.replace("clean(text: str)", "clean(text: str, limit: int = 1)")
               + "x = " + "-" * 100_000 + "1\n")
    proj.write("flows/classify/classify.jinja2", "{{ text }}{{ history }}" + "{% if x %}" * 2000
               + "{% endif %}" * 2000)
    result = cli("lint", "--config", "llmops.yaml")
    assert result.code == 1 and "Traceback" not in result.err
    assert "clean.py" in result.out and "classify.jinja2" in result.out
    assert result.out.count("nested too deeply") == 3  # the template is used by both variants
