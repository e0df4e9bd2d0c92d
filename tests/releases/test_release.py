"""Register and deploy on the local backend: content-versioned models, blue/green, smoke tests, rollback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmops_ci.project.loaded import load_project
from llmops_ci.releases.spec import SmokeTest
from llmops_ci.results.provenance import flow_hash
from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import EXAMPLE, CliResult, classify_by_url, interrupt, processes_using, running

pytestmark = pytest.mark.executor

Cli = Callable[..., CliResult]
PASSED = {"schema": "llmops-ci/summary@1", "flows": {"classify": {"gate": {"passed": True, "checks": []}},
                                                     "classify-run-file": {"gate": {"passed": False, "checks": []}}}}


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "ex"
    shutil.copytree(EXAMPLE, root)
    (root / ".llmops").mkdir()
    (root / ".llmops" / "summary.json").write_text(json.dumps(gated(root)))
    server = FakeOpenAI(answer=classify_by_url).start()
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-deploy-" + "d" * 20)
    monkeypatch.chdir(root)
    # a temp dir of its own (here and in every process started): other runs on the machine make serve dirs too
    private = Path(tempfile.mkdtemp(prefix="rel-"))
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    yield root
    server.stop()
    assert processes_using(tmp_path) == []
    assert list(private.glob("llmops-serve-*")) == []
    shutil.rmtree(private, ignore_errors=True)


def gated(root: Path) -> dict:
    """PASSED, with the gates having judged the flows' content as it is now (what a real gate step records)."""
    project = load_project(root / "llmops.yaml")
    data = json.loads(json.dumps(PASSED))
    for name, entry in data["flows"].items():
        flow = project.config.flows[name]
        entry["gate"]["flow_hash"] = flow_hash(flow, project.info(flow.path))
    return data


def state(root: Path) -> dict:
    return json.loads((root / ".llmops" / "summary.json").read_text())["flows"]


def test_register_follows_content_and_the_gate(cli: Cli, example: Path) -> None:
    first = cli("register")
    assert first.code == 0, first.err
    assert "classify-run-file: not registered: it has no 'register:' block" in first.err
    version = state(example)["classify"]["register"]["version"]
    assert state(example)["classify"]["register"]["created"] is True
    assert cli("register", "--flow", "classify").code == 0
    assert {k: v for k, v in state(example)["classify"]["register"].items() if k not in ("run", "flow_hash")} == {
        "name": "web-classification", "version": version, "created": False, "backend": "local", "gate": "passed"}
    assert [p.name for p in (example / ".llmops" / "registry" / "web-classification").iterdir()] == [version]
    model = json.loads((example / ".llmops" / "registry" / "web-classification" / version / "model.json").read_text())
    assert model["resources"] == [{"node": "classify_with_llm", "connection": "openai", "deployment": "gpt-4o-mini"}]
    assert model["tags"]["llmops.flow"] == "classify"
    (example / "flows" / "classify" / "clean_text.py").write_text(
        (example / "flows" / "classify" / "clean_text.py").read_text() + "\n# changed\n")
    # round 3 (#20 item 9): content the gate never judged is refused; --force registers it, saying so
    refused = cli("register", "--flow", "classify")
    assert refused.code == 1 and "its content changed since the run the gate judged" in refused.err
    assert "or pass --force" in refused.err and state(example)["classify"]["register"]["refused"]
    assert cli("register", "--flow", "classify", "--force").code == 0
    assert state(example)["classify"]["register"]["version"] != version
    assert state(example)["classify"]["register"]["forced"].startswith("its content changed")
    named = cli("register", "--flow", "classify-run-file", "--force")
    assert named.code == 2 and "add 'register: {name: <model name>}' to register it" in named.err


def test_dry_run_changes_nothing(cli: Cli, example: Path) -> None:
    result = cli("deploy", "--flow", "classify", "--dry-run")
    assert result.code == 0, result.err
    assert '"name": "web-classification"' in result.out and "traffic 10% -> 100%" in result.out
    assert not (example / ".llmops" / "registry").exists() and not (example / ".llmops" / "endpoints").exists()


def test_blue_green_with_rollback(cli: Cli, example: Path) -> None:
    assert cli("register", "--flow", "classify").code == 0
    first = cli("deploy", "--flow", "classify")
    assert first.code == 0, first.err
    deploy = state(example)["classify"]["deploy"]
    assert (deploy["status"], deploy["deployment"], deploy["previous"], deploy["traffic"]) == (
        "deployed", "blue", None, {"blue": 100})
    assert deploy["smoke"][0]["passed"] is True
    assert "traffic blue 10%" in first.err and "traffic blue 100%" in first.err
    # smoke results come before the traffic moves, as they happen
    assert first.err.index(": smoke test ") < first.err.index("traffic blue 10%")
    # nothing of prompt flow's home (keyring_pass.cfg, its store) stays in the state dir after a deploy (#27)
    assert not (example / ".llmops" / "pf-home").exists()
    assert not list((example / ".llmops").rglob("keyring_pass.cfg"))

    # a new version whose smoke test fails: green is tried, blue keeps serving
    (example / "tests" / "smoke" / "movie.json").write_text(json.dumps({
        "request": {"url": "https://www.imdb.com/title/tt0111161/", "text": "The Shawshank Redemption"},
        "expect": {"status": 200, "fields": ["category"], "contains": "App"}}))
    (example / "flows" / "classify" / "clean_text.py").write_text(
        (example / "flows" / "classify" / "clean_text.py").read_text() + "\n# v2\n")
    # content the gate never judged (#20 item 9): registered only with --force
    assert cli("register", "--flow", "classify").code == 1
    assert cli("register", "--flow", "classify", "--force").code == 0
    second = cli("deploy", "--flow", "classify")
    assert second.code == 1
    deploy = state(example)["classify"]["deploy"]
    assert (deploy["status"], deploy["deployment"], deploy["previous"], deploy["traffic"]) == (
        "rolled_back", "green", "blue", {"blue": 100})
    failed = [s for s in deploy["smoke"] if not s["passed"]]
    assert [s["name"] for s in failed] == ["movie.json"] and "does not contain 'App'" in failed[0]["error"]
    endpoint = json.loads((example / ".llmops" / "endpoints" / "web-classification-ep.json").read_text())
    assert endpoint["serving"] == "blue" and "green" not in endpoint["slots"]
    assert "deploy failed for classify (blue keeps serving)" in second.err
    assert "nothing was serving" not in second.err
    comment = cli("comment").out
    assert "Release" in comment and "❌ rolled back" in comment and "deploy of classify rolled back" in comment


def test_deploy_needs_a_registered_model(cli: Cli, example: Path) -> None:
    result = cli("deploy", "--flow", "classify")
    assert result.code == 2 and "run 'llmops-ci register --flow classify' first" in result.err


@pytest.mark.parametrize(("test", "status", "body", "error"), [
    (SmokeTest("a", {}), 200, {"x": 1}, None),
    (SmokeTest("a", {}, 200, ("category",)), 200, {"x": 1}, "the response has no category"),
    (SmokeTest("a", {}, 200, (), "App"), 200, {"category": "Movie"}, "does not contain 'App'"),
    (SmokeTest("a", {}, 200, (), None, r'"category": "(App|Movie)"'), 200, {"category": "Movie"}, None),
    (SmokeTest("a", {}), 500, "oops", "HTTP 500, expected 200"),
])
def test_smoke_expectations(test: SmokeTest, status: int, body: object, error: str | None) -> None:
    result = test.check(status, body)
    assert result == error if error is None else error in (result or "")


def test_azureml_dry_run_round_trips_through_azure_loaders(cli: Cli, example: Path, tmp_path: Path) -> None:
    entities = pytest.importorskip("azure.ai.ml")
    cfg = example / "llmops.yaml"
    cfg.write_text(cfg.read_text() + "azureml:\n  subscription_id: ${env:AZ_SUB}\n  resource_group: rg\n"
                   "  workspace: ws\n")
    result = cli("deploy", "--flow", "classify", "--backend", "azureml", "--dry-run")
    assert result.code == 0, result.err
    docs = result.out.split("\n---\n")
    assert len(docs) == 3
    loaders = [entities.load_model, entities.load_online_endpoint, entities.load_online_deployment]
    loaded = []
    for i, (doc, load) in enumerate(zip(docs, loaders, strict=True)):
        path = tmp_path / f"doc{i}.yaml"
        path.write_text(doc)
        loaded.append(load(source=str(path)))
    model, endpoint, deployment = loaded
    assert (model.name, endpoint.name, deployment.name) == ("web-classification", "web-classification-ep", "blue")
    assert model.properties["azureml.promptflow.source_flow_id"] == "classify"
    assert deployment.environment_variables["PROMPTFLOW_RUN_MODE"] == "serving"
    assert not (example / ".llmops" / "registry").exists()
    # without the dry run, an unset ${env:...} in azureml: is exit 2 naming it, before any call
    failed = cli("register", "--flow", "classify", "--backend", "azureml")
    assert failed.code == 2 and "environment variable AZ_SUB is not set" in failed.err


def _serving(root: Path) -> bool:
    return any("llmops_ci.engines.promptflow.serve" in p for p in processes_using(root))


@pytest.mark.parametrize("phase", ["starting", "smoke-testing"])
def test_sigterm_during_deploy_leaves_nothing_serving_and_the_endpoint_as_it_was(
        phase: str, cli: Cli, example: Path) -> None:
    """A CI cancel (SIGTERM) while the new slot starts or is smoke-tested: exit 143, the slot's server and its
    workers gone, the endpoint's state untouched (the previous slot still the one serving)."""
    assert cli("register", "--flow", "classify").code == 0
    endpoint = example / ".llmops" / "endpoints" / "web-classification-ep.json"
    if phase == "smoke-testing":
        assert cli("deploy", "--flow", "classify").code == 0  # blue serves; the next deploy goes to green
    before = endpoint.read_bytes() if endpoint.exists() else None
    slow = FakeOpenAI(answer=classify_by_url, fault="slow", slow_seconds=120).start()  # the smoke test hangs on it
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "TF_BUILD")}
    env["OPENAI_BASE_URL"] = slow.url + "/v1"
    try:
        with running([sys.executable, "-m", "llmops_ci", "deploy", "--flow", "classify"], cwd=example,
                     env=env) as proc:
            deadline = time.monotonic() + 120
            ready = (lambda: _serving(example)) if phase == "starting" else (lambda: bool(slow.requests))
            while not ready() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            assert ready(), proc.communicate(timeout=30)[0] if proc.poll() is not None else f"no {phase} in 120 s"
            started = time.monotonic()
            out = interrupt(proc, signal.SIGTERM)
    finally:
        slow.stop()
    assert proc.returncode == 143, out
    assert time.monotonic() - started < 30, "stopping waited for the slot"
    assert "Traceback" not in out and "terminated (SIGTERM)" in out
    assert not _serving(example) and processes_using(example) == []
    assert (endpoint.read_bytes() if endpoint.exists() else None) == before
    summary = json.loads((example / ".llmops" / "summary.json").read_text())
    assert summary["interrupted"] == {"step": "deploy", "signal": "SIGTERM"}
    # the slot's connection (its key) went with it: prompt flow's home is never in the state dir (#27)
    assert not (example / ".llmops" / "pf-home").exists()
