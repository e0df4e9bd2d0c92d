"""Agent Framework flows on --backend azureml: the dry run prints the migration guide's route (custom model,
score.py, managed online endpoint and deployment) as YAML azure-ai-ml's own loaders accept; anything not built
says so with exit 2 at the flow's line."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.helpers.projects import CliResult

EXAMPLE = Path(__file__).parents[2] / "examples" / "web-classification-maf"
AZURE = '\nazureml:\n  subscription_id: "00000000-0000-0000-0000-000000000000"\n  resource_group: rg\n  workspace: ws\n'


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ex"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".llmops", "__pycache__"))
    (root / "llmops.yaml").write_text((root / "llmops.yaml").read_text() + AZURE)
    monkeypatch.chdir(root)
    for var in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)
    return root


@pytest.mark.parametrize("flow", ["classify-agent", "classify-workflow"])
def test_dry_run_prints_what_azure_ml_loaders_accept(cli: Callable[..., CliResult], example: Path, flow: str,
                                                     tmp_path: Path) -> None:
    from azure.ai.ml import load_model, load_online_deployment, load_online_endpoint

    result = cli("deploy", "--backend", "azureml", "--flow", flow, "--dry-run")
    assert result.code == 0, result.err
    model_text, endpoint_text, deployment_text = result.out.split("\n---\n")
    assert "def init():" in model_text and "def run(raw_data):" in model_text
    model = load_model(source=_write(tmp_path / "model.yml", model_text))
    assert model.type == "custom_model" and model.name == f"web-classification-{flow.split('-')[1]}"
    endpoint = load_online_endpoint(source=_write(tmp_path / "endpoint.yml", endpoint_text))
    assert endpoint.name == model.name and endpoint.auth_mode == "key"
    (tmp_path / "score.py").write_text("")
    deployment = load_online_deployment(source=_write(tmp_path / "deployment.yml", deployment_text))
    assert str(deployment.model).endswith(f"{model.name}:{model.version}")
    assert deployment.code_configuration.scoring_script == "score.py"
    assert not (example / ".llmops" / "registry").exists()


def _write(path: Path, text: str) -> Path:
    path.write_text(yaml.safe_dump(yaml.safe_load(text)))
    return path


def test_register_batch_run_are_refused_at_the_flow_line(cli: Callable[..., CliResult], example: Path) -> None:
    result = cli("register", "--backend", "azureml", "--flow", "classify-agent", "--force")
    assert result.code == 2
    assert "llmops.yaml:" in result.err and "Agent Framework flow: registering on Azure ML is not built" in result.err
    result = cli("batch-run", "--backend", "azureml", "--flow", "classify-workflow", "--dry-run")
    assert result.code == 2 and "Azure ML prompt flow runs cannot run it" in result.err
