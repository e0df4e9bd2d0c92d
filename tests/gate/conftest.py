"""The gate tests' project: flow qa judged by evaluation judge under the rules a test gives."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.helpers.config import Raw, Rule, judged
from tests.helpers.projects import Project

GateProject = Callable[[Mapping[str, Rule | Raw]], Project]


@pytest.fixture
def gate_project(project: Callable[..., Project]) -> GateProject:
    def make(rules: Mapping[str, Rule | Raw]) -> Project:
        return project(config=judged(rules), base=False)
    return make


def run_name(state_dir: Path) -> str:
    """A batch run's name of its own for each state dir, as real runs have one: a baseline is never this run."""
    return "r-" + hashlib.sha1(str(state_dir.absolute()).encode()).hexdigest()[:8]
