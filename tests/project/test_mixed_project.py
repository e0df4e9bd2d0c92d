"""One project with a DAG, a flex flow and a prompty 2.x file: ``pr``, ``register`` and local ``deploy``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import ROOT, CliResult, classify_by_url, processes_using

pytestmark = pytest.mark.executor

EXAMPLE = ROOT / "examples" / "web-classification-flex"
TAGLINE = """\
---
name: tagline
model:
  id: gpt-4o-mini
  provider: openai
  connection:
    kind: reference
    name: openai
inputs:
  - name: url
    kind: string
  - name: text
    kind: string
---
system:
Write a tagline for the page.

user:
{{text}} at {{url}}
"""
FLOWS = """\
  tagline:                               # a prompty 2.x file: the prompty package runs it
    path: flows/tagline.prompty
    data: data/classify.jsonl
    column_mapping:
      url: ${data.url}
      text: ${data.text}
    max_failed_lines: 0
    gate:
      run.lines_failed: {max: 0}
    register:
      name: tagline
    deploy:
      endpoint: tagline-ep
"""


def mixed_copy(root: Path, *, deploy_tagline: bool = True) -> Path:
    """The flex example (a flex flow and a DAG) copied to ``root``, with a prompty 2.x flow beside them."""
    shutil.copytree(EXAMPLE, root)
    (root / "flows" / "tagline.prompty").write_text(TAGLINE, encoding="utf-8")
    config = root / "llmops.yaml"
    text = config.read_text(encoding="utf-8").replace(
        "    register:\n      name: web-classification-flex\n",
        "    register:\n      name: web-classification-flex\n    deploy:\n      endpoint: classify-flex-ep\n"
        "      smoke_tests: smoke/*.json\n")
    assert text.endswith("      accuracy.accuracy: {min: 0.8}\n")  # the DAG's block comes last
    flows = FLOWS if deploy_tagline else FLOWS.replace("    deploy:\n      endpoint: tagline-ep\n", "")
    config.write_text(text + "    register:\n      name: web-classification-dag\n" + flows, encoding="utf-8")
    (root / "smoke").mkdir()
    (root / "smoke" / "movie.json").write_text(json.dumps({
        "request": {"url": "https://www.imdb.com/title/tt0111161/", "text": "The Shawshank Redemption"},
        "expect": {"status": 200, "fields": ["category"], "contains": "Movie"}}), encoding="utf-8")
    return root


@pytest.fixture
def mixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, FakeOpenAI]]:
    root = mixed_copy(tmp_path / "mixed")
    server = FakeOpenAI(answer=classify_by_url).start()
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-mixed-" + "m" * 20)
    monkeypatch.chdir(root)
    yield root, server
    server.stop()
    assert processes_using(tmp_path) == []


def test_dag_flex_and_prompty_through_pr_register_and_deploy(mixed: tuple[Path, FakeOpenAI],
                                                             cli: Callable[..., CliResult]) -> None:
    root, server = mixed
    result = cli("pr")
    assert result.code == 0, result.err
    flows = json.loads((root / ".llmops" / "summary.json").read_text())["flows"]
    for name in ("classify", "classify-dag", "tagline"):
        assert (flows[name]["run"]["lines_total"], flows[name]["run"]["lines_failed"]) == (42, 0), name
    # the flex flow and the DAG replay their cassettes; the prompty file had none, so it was recorded
    assert flows["classify"]["run"]["llm_cache"]["hits"] == 42 and flows["classify-dag"]["run"]["llm_cache"][
        "hits"] == 42
    assert flows["tagline"]["run"]["llm_cache"]["recorded"] == 42 and len(server.requests) == 42
    assert (root / "cassettes" / "tagline.json").is_file()

    registered = cli("register")
    assert registered.code == 0, registered.err
    flows = json.loads((root / ".llmops" / "summary.json").read_text())["flows"]
    for name in ("classify", "classify-dag", "tagline"):
        assert flows[name].get("register", {}).get("created") is True, (name, registered.err)
    tagline = root / ".llmops" / "registry" / "tagline" / flows["tagline"]["register"]["version"]
    assert (tagline / "flow" / "tagline.prompty").is_file()

    deployed = cli("deploy", "--flow", "classify")  # prompt flow serves the flex flow
    assert deployed.code == 0, deployed.err
    deploy = json.loads((root / ".llmops" / "summary.json").read_text())["flows"]["classify"]["deploy"]
    assert deploy["status"] == "deployed" and deploy["smoke"][0]["passed"] is True

    refused = cli("deploy", "--flow", "tagline")
    assert refused.code == 2
    assert "llmops.yaml:" in refused.err and "prompty 2.x format, which no deploy backend serves" in refused.err
    assert "Traceback" not in refused.err
    assert cli("deploy", "--flow", "tagline", "--dry-run").code == 2
