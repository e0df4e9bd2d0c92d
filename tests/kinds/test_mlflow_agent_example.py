"""The support-agent example: lint is clean, its batch run replays offline from the shipped cassette, and its
pull-request check (batch run, policy evaluation over the kept outputs, gate) passes offline."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.config import read_config
from llmops_ci.core.progress import Progress
from llmops_ci.kinds.mlflow.kind import inspect_agent
from llmops_ci.kinds.mlflow.spec import MlflowAgentSpec
from llmops_ci.llm.cassette import CacheSettings
from llmops_ci.results.records import RunJob, RunOptions
from tests.helpers.projects import CliResult, processes_using, snapshot

EXAMPLE = Path(__file__).parents[2] / "examples" / "support-agent"


def test_example_config_and_agent_lint_clean() -> None:
    config, problems = read_config(EXAMPLE / "llmops.yaml", {})
    assert config is not None and problems == []
    flow = config.flows["support"]
    assert flow.block(MlflowAgentSpec) is not None
    info = inspect_agent(flow.path, flow.block(MlflowAgentSpec), flow.block(MlflowAgentSpec).origin)
    assert info.findings == []
    assert "input" in info.inputs and {"output_text", "output"} <= info.outputs


@pytest.mark.executor
def test_example_batch_run_replays_offline(tmp_path: Path) -> None:
    pytest.importorskip("mlflow", reason="needs the [mlflow] extra")
    from llmops_ci.engines.mlflow.engine import MlflowAgentRunner

    config, _ = read_config(EXAMPLE / "llmops.yaml", {})
    assert config is not None
    flow = config.flows["support"]
    assert flow.block(MlflowAgentSpec) is not None and flow.data is not None
    runner = MlflowAgentRunner(tmp_path, {"support": flow.block(MlflowAgentSpec)}, {"support": flow.path},
                               {"PATH": "/usr/bin:/bin", "DATABRICKS_AUTH_TYPE": "pat"})
    info = inspect_agent(flow.path, flow.block(MlflowAgentSpec), flow.block(MlflowAgentSpec).origin)
    job = RunJob("support", "support_replay", flow.path, info, flow.data, {}, None, {}, {}, (), RunOptions(workers=2),
                 cache=CacheSettings("replay", config.cassettes / "support.json"))
    record = runner.run(job, Progress("support", 4, io.StringIO(), live=False))
    assert [line.status for line in record.lines] == ["Completed"] * 4, [line.error for line in record.lines]
    assert record.llm_cache == {"mode": "replay", "hits": 4, "misses": 0, "recorded": 0, "tokens_saved": 245}
    assert "refund within one business day" in str(record.lines[1].outputs)
    assert record.tokens["total"] == 245


def test_factories_read_the_config(tmp_path: Path) -> None:
    from llmops_ci.project.loaded import Project
    from llmops_ci.releases.databricks import DatabricksRelease

    config, _ = read_config(EXAMPLE / "llmops.yaml", {})
    assert config is not None
    info = Project(config).info(config.flows["support"].path)
    assert info is not None and info.kind == "mlflow_agent" and info.definition.name == "agent.py"
    release = DatabricksRelease.for_config(tmp_path, config, {"DATABRICKS_HOST": "https://adb-1.azuredatabricks.net"})
    assert release.host == "https://adb-1.azuredatabricks.net" and release._client is None  # nothing connected


@pytest.mark.executor
def test_example_pr_runs_offline_with_its_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     cli: Callable[..., CliResult]) -> None:
    """The README's promise: `pr` lints, replays the agent, scores its kept answers with the policy evaluation
    and gates on them, with no endpoint and no key."""
    pytest.importorskip("mlflow", reason="needs the [mlflow] extra")
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DATABRICKS_HOST", "DATABRICKS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(EXAMPLE.parent.parent)
    before = snapshot(EXAMPLE)
    state = tmp_path / "state"
    result = cli("pr", "--config", str(EXAMPLE / "llmops.yaml"), "--state-dir", str(state))
    assert result.code == 0, result.err
    flow = json.loads((state / "summary.json").read_text())["flows"]["support"]
    assert flow["run"]["llm_cache"]["hits"] == 4 and flow["run"]["llm_cache"]["misses"] == 0
    assert flow["evaluations"]["policy"]["metrics"] == {"coverage": 1.0, "brief_rate": 1.0}
    assert {(c["metric"], c["rule"]) for c in flow["gate"]["checks"]} >= {
        ("policy.coverage", "min"), ("policy.coverage", "max_drop"), ("policy.brief_rate", "min")}
    lines = (state / "runs/support/evals/policy/lines.jsonl").read_text().splitlines()
    scores = [json.loads(x)["outputs"] for x in lines]
    assert [s["coverage"] for s in scores] == [1.0] * 4 and all(s["missing"] == [] for s in scores)
    assert snapshot(EXAMPLE) == before  # no cassette written, nothing left in the example
    assert processes_using(tmp_path) == []
