"""The deploy step's engine check names each refused flow's own kind, also when two kinds share an engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from llmops_ci.core.errors import ConfigError
from llmops_ci.kinds.base import FlowInfo
from llmops_ci.releases.base import Release, check_engine


class _Where:
    def __init__(self, name: str) -> None:
        self.name = name

    def problem(self, keys: tuple[str, ...], message: str, rule: str, at_key: bool = False) -> Any:
        return (self.name, message, rule)


class _Flow:
    def __init__(self, name: str) -> None:
        self.name = name

    def where(self, key: str) -> _Where:
        return _Where(self.name)


class _OnlyAgents(Release):
    name = "agents"
    engines = frozenset({"mlflow_agent"})


def test_two_refused_kinds_on_one_engine_each_get_their_own_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ConfigError, "__init__", lambda self, problems: setattr(self, "problems", problems))
    flows = [(_Flow("a"), FlowInfo("dag", Path("a"), Path("a/flow.dag.yaml"))),
             (_Flow("b"), FlowInfo("flex", Path("b"), Path("b/flow.flex.yaml")))]
    with pytest.raises(ConfigError) as refused:
        check_engine(_OnlyAgents(), cast(Any, flows))
    messages = {name: message for name, message, _ in cast(Any, refused.value).problems}
    assert messages["a"].startswith("flow 'a' is a dag flow, which --backend agents does not deploy")
    assert messages["b"].startswith("flow 'b' is a flex flow, which --backend agents does not deploy")
