"""Each kind states the facts other layers act on as ``FlowInfo`` fields (#23): which engine runs it, what serves
it, whether an input's default shadows a same-named data column, what a line missing a mapped column gets, and
whether its code looks connections up by name. Nothing outside ``kinds/`` tests a kind's name for them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llmops_ci.config import read_config
from llmops_ci.kinds import inspect
from llmops_ci.kinds.base import FlowInfo
from llmops_ci.project.loaded import Project

ROOT = Path(__file__).resolve().parents[2]
PROMPTY2 = """\
    ---
    name: summarize
    model:
      id: gpt-4o-mini
      provider: openai
      apiType: chat
    inputs:
      - name: text
        kind: string
    ---
    system:
    Summarize {{text}}
    """


def facts(info: FlowInfo | None) -> tuple[str, str, str | None, bool, str, bool]:
    assert info is not None
    return (info.kind, info.engine, info.served_by, info.defaults_shadow_columns, info.missing_value,
            info.connections_by_name)


@pytest.mark.parametrize(("path", "expected"), [
    ("examples/web-classification/flows/classify", ("dag", "promptflow", "promptflow", True, "typed", False)),
    ("examples/web-classification-flex/flows/classify", ("flex", "promptflow", "promptflow", True, "nan", True)),
    ("tests/kinds/data/prompty/basic/basic.prompty",
     ("prompty", "promptflow", "promptflow", True, "nan", True)),
    ("examples/web-classification-maf/agents/classify.yaml",
     ("agent_framework", "agent_framework", "agent_framework", False, "absent", False)),
])
def test_flow_facts_by_kind(path: str, expected: tuple[str, str, str | None, bool, str, bool]) -> None:
    assert facts(inspect(ROOT / path)) == expected


def test_prompty2_is_run_by_the_prompty_package_and_served_by_nothing(tmp_path: Path) -> None:
    (tmp_path / "summarize.prompty").write_text(textwrap.dedent(PROMPTY2), encoding="utf-8")
    assert facts(inspect(tmp_path / "summarize.prompty")) == ("prompty", "prompty", None, True, "absent", True)


@pytest.mark.parametrize(("example", "flow", "expected"), [
    ("support-agent", "support", ("mlflow_agent", "mlflow_agent", "mlflow_agent", False, "absent", False)),
    ("web-classification-maf", "classify-workflow",
     ("agent_framework", "agent_framework", "agent_framework", False, "absent", False)),
])
def test_config_declared_flow_facts(example: str, flow: str,
                                    expected: tuple[str, str, str | None, bool, str, bool]) -> None:
    config, _ = read_config(ROOT / "examples" / example / "llmops.yaml", None)
    assert config is not None
    assert facts(Project(config).info(config.flows[flow].path)) == expected
