"""Which executor a flow goes to: the engine its kind declares for the file, then the kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmops_ci.engines.base import BackendContext
from llmops_ci.kinds import inspect
from llmops_ci.runs.local import RunsByEngine

UPSTREAM = Path(__file__).parents[1] / "kinds" / "data" / "upstream"
PROMPTY2 = """\
---
name: v2
model:
  id: gpt-4o-mini
  provider: openai
  connection: {kind: key, endpoint: "${env:OPENAI_BASE_URL}", key: "${env:OPENAI_API_KEY}"}
inputs:
  - name: question
    kind: string
---
system:
Be brief.
user:
{{question}}
"""


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


def engines() -> RunsByEngine:
    def make(name: str) -> Any:
        return lambda ctx: Named(name)

    ctx = BackendContext(project=None, state_dir=Path("."), environ={})  # type: ignore[arg-type]
    return RunsByEngine("local", ctx, make("promptflow"),
                        {"mlflow_agent": make("mlflow"), "prompty": make("prompty package")})


@pytest.mark.parametrize("path", ["prompty-basic/basic.prompty", "prompty-format-output/json_format.prompty",
                                  "prompty-eval-apology/apology.prompty", "chat-stream/chat.prompty"])
def test_prompt_flows_prompty_format_runs_on_prompt_flow(path: str) -> None:
    # before: exit 2 "the prompty package cannot load this file: Invalid Property discriminator field 'kind'"
    info = inspect(UPSTREAM / path)
    assert info is not None and (info.kind, info.engine) == ("prompty", "promptflow")
    assert engines().for_info(info).name == "promptflow"  # type: ignore[attr-defined]


def test_prompty_2_files_go_to_the_prompty_package(tmp_path: Path) -> None:
    (tmp_path / "v2.prompty").write_text(PROMPTY2, encoding="utf-8")
    info = inspect(tmp_path / "v2.prompty")
    assert info is not None and (info.kind, info.engine) == ("prompty", "prompty")
    assert engines().for_info(info).name == "prompty package"  # type: ignore[attr-defined]


def test_other_kinds_by_kind() -> None:
    info = inspect(UPSTREAM / "maths-to-code")
    assert info is not None and info.kind == "dag"
    assert engines().for_info(info).name == "promptflow"  # type: ignore[attr-defined]
