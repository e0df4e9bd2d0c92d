"""A release target defined here, in the tests only: one class and one ``RELEASES`` line. It supplies only its
slot operations; register and deploy go through the steps unchanged, and the shared blue/green loop smoke-tests the
new slot, moves traffic step by step, and on a failed smoke test leaves the previous slot serving."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmops_ci.core.errors import UsageError
from llmops_ci.engines.base import BackendContext
from llmops_ci.releases import RELEASES
from llmops_ci.releases.base import Release
from llmops_ci.releases.bluegreen import Stage, roll_out
from llmops_ci.releases.spec import DeployPlan, DeployResult, ModelSpec, SmokeResult, SmokeTest, other_slot
from llmops_ci.results.records import ProviderConnection
from tests.helpers.projects import BASE_PROJECT, CliResult, Project

Cli = Callable[..., CliResult]


class ToySlots:
    """An endpoint in a JSON file: which slot serves which model version, and each traffic step taken."""

    routed = True

    def __init__(self, path: Path, plan: DeployPlan) -> None:
        self.path, self.plan = path, plan
        self.state = json.loads(path.read_text()) if path.is_file() else {"serving": None, "slots": {}, "steps": []}
        self.previous: str | None = self.state["serving"]
        self.slot = other_slot(self.previous)
        self.traffic = {self.previous: 100} if self.previous else {}
        self.url: str | None = f"toy://{plan.endpoint}"

    def start(self) -> str | None:
        self.state["slots"][self.slot] = self.plan.model.version
        return None

    def smoke(self, test: SmokeTest) -> SmokeResult:
        body = {"model": self.plan.model.name, "version": self.state["slots"][self.slot], "echo": test.request}
        error = test.check(200, body)
        return SmokeResult(test.name, error is None, error, 0.0)

    def shift(self, traffic: dict[str, int]) -> str | None:
        self.state["steps"].append(traffic)
        return None

    def promote(self) -> str | None:
        self.state["serving"] = self.slot
        self.path.write_text(json.dumps(self.state))
        return f"{self.slot} serves {self.plan.model.name}:{self.plan.model.version}"

    def roll_back(self, failure: str, stage: Stage, traffic: dict[str, int]) -> str:
        return f"{failure}; traffic stays on {self.previous or 'nothing'}"

    def close(self, deployed: bool) -> None:
        return None


class ToyRelease(Release):
    """Models as JSON files under the state dir; endpoints served by ``ToySlots``."""

    name = "toy"
    engines = frozenset({"promptflow"})

    def __init__(self, ctx: BackendContext) -> None:
        self.root = ctx.state_dir / "toy-release"

    def _model(self, spec: ModelSpec) -> Path:
        return self.root / "models" / f"{spec.name}-{spec.version}.json"

    def register(self, spec: ModelSpec) -> tuple[str, str, bool]:
        if self._model(spec).is_file():
            return spec.name, spec.version, False
        self._model(spec).parent.mkdir(parents=True, exist_ok=True)
        self._model(spec).write_text(json.dumps({"flow": spec.flow, "tags": spec.tags}))
        return spec.name, spec.version, True

    def deploy(self, plan: DeployPlan, connections: tuple[ProviderConnection, ...], keep: bool) -> DeployResult:
        if not self._model(plan.model).is_file():
            raise UsageError(f"{plan.model.name}:{plan.model.version} is not registered; run register first")
        return roll_out(plan, ToySlots(self.root / f"{plan.endpoint}.json", plan))

    def dry_run_model(self, spec: ModelSpec) -> str:
        return f"# would register {spec.name}:{spec.version} (toy)\n"

    def dry_run_plan(self, plan: DeployPlan) -> str:
        return self.dry_run_model(plan.model) + f"# would deploy to {plan.endpoint}, traffic {list(plan.traffic)}\n"


CONFIG = BASE_PROJECT["llmops.yaml"].rstrip(" ") + """\
            register:
              name: classify-model
            deploy:
              endpoint: toy-ep
              traffic: [25, 100]
              smoke_tests: smoke/*.json
        """


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch, project: Callable[..., Project]) -> Iterator[Project]:
    monkeypatch.setitem(RELEASES, "toy", ToyRelease)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-toy-" + "t" * 20)
    proj = project({"llmops.yaml": CONFIG, "smoke/hello.json": json.dumps(
        {"request": {"text": "hello"}, "expect": {"fields": ["version"], "contains": "classify-model"}})})
    yield proj


def _summary(proj: Project) -> dict[str, Any]:
    return json.loads(proj.read(".llmops/summary.json"))["flows"]["classify"]  # type: ignore[no-any-return]


def test_toy_target_registers_and_deploys_blue_green_through_the_steps(toy: Project, cli: Cli) -> None:
    assert "toy" in cli("deploy", "--help").out
    dry = cli("deploy", "--backend", "toy", "--dry-run")
    assert dry.code == 0, dry.err
    assert "# would deploy to toy-ep, traffic [25, 100]" in dry.out

    registered = cli("register", "--backend", "toy", "--force")
    assert registered.code == 0, registered.err
    first_version = _summary(toy)["register"]["version"]
    assert "registered classify-model:" in registered.err and _summary(toy)["register"]["backend"] == "toy"
    assert cli("register", "--backend", "toy", "--force").code == 0
    assert _summary(toy)["register"]["created"] is False

    first = cli("deploy", "--backend", "toy")
    assert first.code == 0, first.err
    deploy = _summary(toy)["deploy"]
    assert (deploy["status"], deploy["deployment"], deploy["previous"], deploy["traffic"]) == (
        "deployed", "blue", None, {"blue": 100})
    assert deploy["smoke"][0]["passed"] is True and deploy["message"] == f"blue serves classify-model:{first_version}"
    # nothing served before: a routed endpoint takes all traffic at once
    endpoint = json.loads(toy.read(".llmops/toy-release/toy-ep.json"))
    assert endpoint["serving"] == "blue" and endpoint["steps"] == [{"blue": 100}]

    # new content, and a smoke test it fails: green is tried, no traffic moves, blue keeps serving
    toy.write("flows/classify/extra.txt", "v2\n")
    assert cli("register", "--backend", "toy", "--force").code == 0
    assert _summary(toy)["register"]["version"] != first_version
    toy.write("smoke/strict.json", json.dumps({"request": {"text": "hi"}, "expect": {"contains": "nope"}}))
    second = cli("deploy", "--backend", "toy")
    assert second.code == 1
    assert "blue keeps serving" in second.err
    deploy = _summary(toy)["deploy"]
    assert (deploy["status"], deploy["deployment"], deploy["previous"], deploy["traffic"]) == (
        "rolled_back", "green", "blue", {"blue": 100})
    assert [s["passed"] for s in deploy["smoke"]] == [True, False]
    assert "smoke test strict.json" in deploy["message"] and "traffic stays on blue" in deploy["message"]
    endpoint = json.loads(toy.read(".llmops/toy-release/toy-ep.json"))
    assert endpoint["serving"] == "blue" and endpoint["slots"] == {"blue": first_version}

    # the smoke test passes again: green takes traffic in the plan's steps, beside blue
    toy.write("smoke/strict.json", json.dumps({"request": {"text": "hi"}, "expect": {"contains": "classify"}}))
    third = cli("deploy", "--backend", "toy")
    assert third.code == 0, third.err
    assert "toy-ep: traffic green 25%, blue 75%" in third.err
    deploy = _summary(toy)["deploy"]
    assert (deploy["status"], deploy["deployment"], deploy["previous"], deploy["traffic"]) == (
        "deployed", "green", "blue", {"green": 100})
    endpoint = json.loads(toy.read(".llmops/toy-release/toy-ep.json"))
    assert endpoint["steps"][-2:] == [{"green": 25, "blue": 75}, {"green": 100, "blue": 0}]


def test_a_target_refuses_the_engines_it_does_not_declare(toy: Project, cli: Cli,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ToyRelease, "engines", frozenset({"flex"}))
    for args in (("--dry-run",), ()):
        refused = cli("deploy", "--backend", "toy", *args)
        assert refused.code == 2, refused.err
        assert "llmops.yaml:" in refused.err and "which --backend toy does not deploy" in refused.err
        assert "flow 'classify' is a dag flow" in refused.err and "Traceback" not in refused.err
    assert not toy.path(".llmops/toy-release").exists()
