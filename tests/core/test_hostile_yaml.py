"""Hostile YAML: alias bombs, recursive aliases, huge integers, deep nesting, FIFOs: exit 2 with file:line, fast."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.core.errors import ConfigError
from llmops_ci.core.yamldoc import MAX_VALUES, load_yaml, parse_yaml
from tests.conftest import CliResult, Project
from tests.helpers.config import Flow
from tests.helpers.projects import BASE_CONFIG


def _laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _merge_bomb(levels: int = 40) -> str:
    lines = ["m0: &m0 {x: 1}"]
    for i in range(1, levels + 1):
        lines.append(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}")
    return "\n".join(lines) + "\n"


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse_yaml(text, Path("bad.yaml"))
    return str(err.value)


@pytest.mark.parametrize(("text", "line", "says"), [
    (_laughs(), 6, "expands to more than"),  # l5: 9**6 values
    (_merge_bomb(), None, "expands to more than"),
    ("a: &a [1, *a]\n", 1, "recursive alias"),
    ("a: &a {b: {c: *a}}\n", 1, "recursive alias"),
    ("a: &a {<<: *a}\n", 1, "recursive alias"),
    ("n: " + "9" * 5000 + "\n", 1, "more than 4,300 digits"),
    ("when: 2001-13-45\n", 1, "month must be in"),
    ("a: " + "[" * 150 + "]" * 150 + "\n", 1, "nested more than"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", 1, "nesting depth"),
    ("? [a, b]\n: 1\n", 1, "a key must be plain text"),
])
def test_hostile_documents_are_located_errors(text: str, line: int | None, says: str) -> None:
    message = _error(text)
    assert says in message
    assert message.startswith("bad.yaml:" + (f"{line}:" if line else ""))


def test_aliases_within_the_bound_still_work() -> None:
    doc = parse_yaml("base: &b {x: 1, y: [1, 2]}\nuse: *b\nmerged: {<<: *b, z: 3}\n", Path("ok.yaml"))
    assert doc.data["use"] == {"x": 1, "y": [1, 2]}
    assert doc.data["merged"] == {"x": 1, "y": [1, 2], "z": 3}
    small = _laughs(levels=3, width=9)  # 9**4 values: within the bound
    assert MAX_VALUES > 9 ** 4
    assert len(parse_yaml(small, Path("ok.yaml")).data["l3"]) == 9


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "llmops.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as err:
        load_yaml(fifo)
    assert "not a regular file" in str(err.value)


def test_every_yaml_we_read_uses_the_bounded_loader(project: Callable[..., Project],
                                                    cli: Callable[..., CliResult]) -> None:
    """llmops.yaml, a run.yml and a flow.dag.yaml: the same bomb is a located error, never a hang or traceback."""
    bomb = _laughs()
    proj = project()
    proj.write("llmops.yaml", proj.read("llmops.yaml") + bomb)
    result = cli("lint", "--config", "llmops.yaml")
    assert result.code == 1 and "expands to more than" in result.out and "Traceback" not in result.err

    proj = project()
    proj.write("flows/classify/flow.dag.yaml", proj.read("flows/classify/flow.dag.yaml") + "x: &r [*r]\n")
    result = cli("lint", "--config", "llmops.yaml")
    assert result.code == 1 and "flow.dag.yaml" in result.out and "recursive alias" in result.out

    proj = project(config=BASE_CONFIG.add_flow("viafile", Flow(run_file="runs/c.run.yml"), before="classify"))
    proj.write("runs/c.run.yml", "flow: ../flows/classify\nn: " + "1" * 5000 + "\n")
    result = cli("batch-run", "--config", "llmops.yaml")
    assert result.code == 2 and "c.run.yml:2:" in result.err and "Traceback" not in result.err
