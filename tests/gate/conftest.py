"""The gate tests' project: flow qa judged by evaluation judge under the rules a test gives."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from tests.helpers.config import Raw, Rule, judged
from tests.helpers.projects import Project

GateProject = Callable[[Mapping[str, Rule | Raw]], Project]


@pytest.fixture
def gate_project(project: Callable[..., Project]) -> GateProject:
    def make(rules: Mapping[str, Rule | Raw]) -> Project:
        return project(config=judged(rules), base=False)
    return make
