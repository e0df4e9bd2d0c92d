"""The CI entry points offer every ``--backend`` the registries hold: the Azure Pipelines templates' ``values:``
lists and the GitHub Action's ``backend`` input description (they once lacked databricks)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops_ci.steps.targets import backend_names

ROOT = Path(__file__).parents[2]


def _parameter(path: Path, name: str) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    (found,) = [p for p in data["parameters"] if p["name"] == name]
    assert isinstance(found, dict)
    return found


@pytest.mark.parametrize("template", ["azure-pipelines-template.yml", "azure-pipelines-steps.yml"])
def test_the_pipeline_templates_offer_every_backend(template: str) -> None:
    backend = _parameter(ROOT / template, "backend")
    assert backend["default"] == "local"
    assert sorted(backend["values"]) == sorted(backend_names())


def test_the_action_names_every_backend() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))
    description = action["inputs"]["backend"]["description"]
    named = set(re.findall(r"[a-z]+", description))
    assert set(backend_names()) <= named, description
    assert action["inputs"]["backend"]["default"] == "local"
