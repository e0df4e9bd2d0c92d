"""``--backend azureml --dry-run`` for flex flows and prompty files: YAML that the backend's own loaders accept,
and a clear exit 2 for what the workspace cannot run (prompty 2.x files)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.projects import CliResult
from tests.project.test_mixed_project import EXAMPLE, mixed_copy

AZUREML = """\
  pfprompty:                              # a prompty file in prompt flow's format, as a flow of its own
    path: flows/pfprompty/classify.prompty
    data: data/classify.jsonl
    column_mapping:
      url: ${data.url}
      text_content: ${data.text}
azureml:
  subscription_id: ${env:AZURE_SUBSCRIPTION_ID}
  resource_group: rg-llmops
  workspace: ws-llmops
"""


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = mixed_copy(tmp_path / "mixed", deploy_tagline=False)
    (root / "flows" / "pfprompty").mkdir()
    shutil.copy(EXAMPLE / "flows" / "classify" / "classify.prompty", root / "flows" / "pfprompty")
    with (root / "llmops.yaml").open("a", encoding="utf-8") as fh:
        fh.write(AZUREML)
    for var in ("AZURE_SUBSCRIPTION_ID", "OPENAI_API_KEY", "OPENAI_BASE_URL"):  # a dry run needs none
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(root)
    return root


def _docs(text: str, folder: Path, name: str) -> list[Path]:
    paths = []
    for i, doc in enumerate(text.split("---\n")):
        paths.append(folder / f"{name}{i}.yaml")
        paths[-1].write_text(doc, encoding="utf-8")
    return paths


def test_runs_of_flex_and_prompty_flows_load_as_run_yml(root: Path, cli: Callable[..., CliResult]) -> None:
    from promptflow._sdk._load_functions import load_run

    result = cli("batch-run", "--backend", "azureml", "--dry-run", "--flow", "classify", "--flow", "classify-dag",
                 "--flow", "pfprompty")
    assert result.code == 0, result.err
    runs = [load_run(p) for p in _docs(result.out, root, "batch")]
    assert [Path(str(r.flow)) for r in runs] == [root / "flows/classify", root / "flows/classify-dag",
                                                 root / "flows/pfprompty/classify.prompty"]
    assert runs[0].column_mapping == {"url": "${data.url}", "text": "${data.text}"}
    assert runs[2].column_mapping == {"url": "${data.url}", "text_content": "${data.text}"}
    assert "#   flow.flex.yaml\n" in result.out and "#   classify.prompty\n" in result.out

    result = cli("eval-run", "--backend", "azureml", "--dry-run", "--flow", "classify")
    assert result.code == 0, result.err
    (evaluation,) = [load_run(p) for p in _docs(result.out, root, "eval")]
    assert Path(str(evaluation.flow)) == root / "flows/eval-accuracy"  # the flex evaluation class
    assert evaluation.run == "classify-batch-run-not-made-yet"
    assert not (root / ".llmops" / "runs").exists()


def test_prompty_2x_flow_is_refused_at_its_path(root: Path, cli: Callable[..., CliResult]) -> None:
    result = cli("batch-run", "--backend", "azureml", "--dry-run")
    assert result.code == 2
    line = next(i for i, text in enumerate((root / "llmops.yaml").read_text().splitlines(), 1)
                if "path: flows/tagline.prompty" in text)
    assert f"llmops.yaml:{line}:" in result.err
    assert "'tagline' is a .prompty file in the prompty 2.x format" in result.err
    assert "Traceback" not in result.err and result.out == ""


def test_deploy_of_a_flex_flow_loads_with_azure_ai_ml(root: Path, cli: Callable[..., CliResult]) -> None:
    from azure.ai.ml import load_model, load_online_deployment, load_online_endpoint

    result = cli("deploy", "--backend", "azureml", "--dry-run", "--flow", "classify")
    assert result.code == 0, result.err
    model_file, endpoint_file, deployment_file = _docs(result.out, root, "deploy")
    model = load_model(model_file)
    assert (model.name, model.type, Path(str(model.path))) == ("web-classification-flex", "custom_model",
                                                               root / "flows/classify")
    assert model.properties["is-promptflow"] == "true"
    assert load_online_endpoint(endpoint_file).name == "classify-flex-ep"
    deployment = load_online_deployment(deployment_file)
    assert (deployment.name, deployment.endpoint_name) == ("blue", "classify-flex-ep")
    assert deployment.model == f"web-classification-flex:{model.version}"
