"""action.yml, the workflows, both Azure Pipelines templates and every YAML snippet in the wrapper docs, validated
against the official schemas vendored in tests/schemas (see tests/schemas/README.md for their source and commit).

The Azure Pipelines schema describes a pipeline after template expansion, as the service and the language server
read it: the templates are expanded first (tests/ci/azure_sim.py) for each parameter combination that changes
their shape."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.ci import azure_sim as az

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "schemas"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


@cache
def validator(name: str) -> Any:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def errors(name: str, document: Any) -> list[str]:
    """Each error as its deepest cause (a oneOf over step kinds would otherwise only say 'not valid')."""
    if name.startswith("azure-"):
        document = scalars_as_text(document)
    return [deepest(e) for e in validator(name).iter_errors(document)]


def deepest(error: Any) -> str:
    def walk(e: Any) -> list[Any]:
        return [x for c in e.context for x in walk(c)] if e.context else [e]

    leaf = max(walk(error), key=lambda e: len(e.absolute_path))
    return f"{'/'.join(map(str, leaf.absolute_path))}: {leaf.message[:300]}"


def scalars_as_text(node: Any) -> Any:
    """Azure Pipelines reads every YAML scalar as a string (``fetchDepth: 0`` is the string "0"), and so does
    the language server; only booleans keep their type, as the schema declares them."""
    if isinstance(node, dict):
        return {k: scalars_as_text(v) for k, v in node.items()}
    if isinstance(node, list):
        return [scalars_as_text(v) for v in node]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return str(node)
    return node


def load(text: str) -> Any:
    data = yaml.safe_load(text)
    if isinstance(data, dict) and True in data:  # YAML 1.1 reads the key `on` as true
        data["on"] = data.pop(True)
    return data


def test_the_vendored_schemas_are_documented() -> None:
    readme = (SCHEMAS / "README.md").read_text(encoding="utf-8")
    for path in SCHEMAS.glob("*.json"):
        assert path.name in readme, path.name
    assert re.search(r"\b[0-9a-f]{40}\b", readme)


def test_action_yml() -> None:
    assert errors("github-action.json", load((ROOT / "action.yml").read_text(encoding="utf-8"))) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflows(path: Path) -> None:
    assert errors("github-workflow.json", load(path.read_text(encoding="utf-8"))) == []


PARAMETER_SETS = [
    {},
    {"backend": "azureml", "azureServiceConnection": "llmops-azureml", "extras": "azure,mlflow"},
    {"backend": "azureml"},  # the early stop
    {"baseline": "none", "comment": False, "changedSince": "auto", "flows": ["a", "b"]},
    {"artifacts": "build", "env": {"OPENAI_API_KEY": "$(OPENAI_API_KEY)"}, "pool": {"name": "self-hosted"}},
]


@pytest.mark.parametrize("parameters", PARAMETER_SETS)
def test_the_extends_template_expanded(parameters: dict[str, Any]) -> None:
    assert errors("azure-pipelines-service-schema.json", az.expand_pipeline(parameters)) == []


@pytest.mark.parametrize("parameters", PARAMETER_SETS[:4])
def test_the_steps_template_expanded(parameters: dict[str, Any]) -> None:
    steps = az.expand_file(az.STEPS, parameters)
    assert errors("azure-pipelines-service-schema.json", {"steps": steps["steps"]}) == []


def test_the_schema_check_catches_a_wrong_task_input() -> None:
    pipeline = az.expand_pipeline({})
    step = next(s for s in az.job_steps(pipeline) if s.get("task") == "Cache@2")
    step["inputs"]["keyy"] = step["inputs"].pop("key")
    assert errors("azure-pipelines-service-schema.json", pipeline)


def snippets(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return [(text[:m.start()].count("\n") + 2, m.group(1)) for m in re.finditer(r"```yaml\n(.*?)```", text, re.S)]


GITHUB_DOC = ROOT / "docs" / "github-action.md"
AZURE_DOC = ROOT / "docs" / "azure-pipelines.md"


@pytest.mark.parametrize(("line", "text"), snippets(GITHUB_DOC), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_github_doc_snippets(line: int, text: str) -> None:
    data = load(text)
    if isinstance(data, list):  # steps to add to a job
        data = {"on": "push", "jobs": {"check": {"runs-on": "ubuntu-latest", "steps": [{"id": "llmops", "uses": "./"},
                                                                                       *data]}}}
    assert isinstance(data, dict) and "jobs" in data, f"docs/github-action.md:{line}: not a workflow or steps"
    assert errors("github-workflow.json", data) == [], f"docs/github-action.md:{line}"


@pytest.mark.parametrize(("line", "text"), snippets(AZURE_DOC), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_azure_doc_snippets(line: int, text: str) -> None:
    data = load(text)
    assert errors("azure-pipelines-service-schema.json", data) == [], f"docs/azure-pipelines.md:{line}"
    if "extends" in data:  # the parameters it passes are the template's, with valid values
        given = data["extends"].get("parameters", {})
        assert errors("azure-pipelines-service-schema.json", az.expand_pipeline(given)) == []
    for step in data.get("steps", []):
        if isinstance(step, dict) and str(step.get("template", "")).startswith("azure-pipelines-steps.yml"):
            az.expand_file(az.STEPS, step.get("parameters", {}))


def readme_ci_snippets() -> list[tuple[int, str]]:
    """The wrapper snippets of docs/ci.md (moved there from the README's "Use in CI" section, #27)."""
    text = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    start = 0
    end = text.find("\n## Security model")
    section = text[start:end if end > 0 else len(text)]
    offset = 0
    return [(offset + section[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"```yaml\n(.*?)```", section, re.S)]


@pytest.mark.parametrize(("line", "text"), readme_ci_snippets(), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_readme_ci_snippets(line: int, text: str) -> None:
    data = load(text)
    if "jobs" in data and "on" in data:
        assert errors("github-workflow.json", data) == [], f"docs/ci.md:{line}"
    else:
        assert errors("azure-pipelines-service-schema.json", data) == [], f"docs/ci.md:{line}"
        az.expand_pipeline(data["extends"].get("parameters", {}))
