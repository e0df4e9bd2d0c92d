"""The one blue/green loop: what it asks of a target's slots, in which order, and what it reports on each failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops_ci.releases.bluegreen import Stage, roll_out, traffic_steps
from llmops_ci.releases.spec import DeployPlan, ModelSpec, SmokeResult, SmokeTest


class Scripted:
    """Slots that record every call and fail where told."""

    def __init__(self, previous: str | None, *, routed: bool = True, start: str | None = None,
                 smoke_ok: bool = True, shift_fails_at: int | None = None, raises: str | None = None) -> None:
        self.previous, self.routed = previous, routed
        self.slot = "green" if previous == "blue" else "blue"
        self.traffic = {previous: 100} if previous else {}
        self.url: str | None = "test://ep"
        self._start, self.smoke_ok, self.shift_fails_at, self.raises = start, smoke_ok, shift_fails_at, raises
        self.calls: list[tuple[object, ...]] = []

    def start(self) -> str | None:
        self.calls.append(("start",))
        return self._start

    def smoke(self, test: SmokeTest) -> SmokeResult:
        self.calls.append(("smoke", test.name))
        if self.raises == "smoke":
            raise KeyboardInterrupt
        return SmokeResult(test.name, self.smoke_ok, None if self.smoke_ok else "no", 0.0)

    def shift(self, traffic: dict[str, int]) -> str | None:
        self.calls.append(("shift", traffic))
        return "refused" if traffic.get(self.slot) == self.shift_fails_at else None

    def promote(self) -> str | None:
        self.calls.append(("promote",))
        return "promoted"

    def roll_back(self, failure: str, stage: Stage, traffic: dict[str, int]) -> str:
        self.calls.append(("roll_back", failure, stage, traffic))
        return f"rolled back: {failure}"

    def close(self, deployed: bool) -> None:
        self.calls.append(("close", deployed))


def _plan(traffic: tuple[int, ...] = (10, 50, 100)) -> DeployPlan:
    spec = ModelSpec("m", "v1", "flow", Path("flow"), None, {}, ())
    return DeployPlan(spec, "ep", None, 1, traffic, (SmokeTest("a.json", {}), SmokeTest("b.json", {})))


def test_smoke_tests_come_before_any_traffic_and_promotion_comes_last() -> None:
    slots = Scripted("blue")
    result = roll_out(_plan(), slots)
    assert (result.status, result.deployment, result.previous, result.traffic, result.message) == (
        "deployed", "green", "blue", {"green": 100}, "promoted")
    assert slots.calls == [("start",), ("smoke", "a.json"), ("smoke", "b.json"),
                           ("shift", {"green": 10, "blue": 90}), ("shift", {"green": 50, "blue": 50}),
                           ("shift", {"green": 100, "blue": 0}), ("promote",), ("close", True)]


def test_a_slot_that_does_not_start_is_never_smoke_tested_and_traffic_stays() -> None:
    slots = Scripted("blue", start="image pull failed")
    result = roll_out(_plan(), slots)
    assert (result.status, result.traffic, result.smoke) == ("rolled_back", {"blue": 100}, [])
    assert slots.calls == [("start",), ("roll_back", "image pull failed", "start", {"blue": 100}), ("close", False)]


def test_a_failed_smoke_test_moves_no_traffic() -> None:
    slots = Scripted(None, smoke_ok=False)
    result = roll_out(_plan(), slots)
    assert (result.status, result.traffic) == ("rolled_back", {})
    assert result.message == "rolled back: smoke test a.json: no; smoke test b.json: no"
    assert [c[0] for c in slots.calls] == ["start", "smoke", "smoke", "roll_back", "close"]


def test_a_failed_traffic_step_rolls_back_from_where_it_stopped() -> None:
    slots = Scripted("blue", shift_fails_at=50)
    result = roll_out(_plan(), slots)
    assert (result.status, result.traffic) == ("rolled_back", {"blue": 100})
    assert slots.calls[-2:] == [("roll_back", "refused", "traffic", {"green": 10, "blue": 90}), ("close", False)]


def test_an_interrupt_still_closes_the_slots() -> None:
    slots = Scripted("blue", raises="smoke")
    with pytest.raises(KeyboardInterrupt):
        roll_out(_plan(), slots)
    assert slots.calls[-1] == ("close", False)


def test_traffic_steps_with_nothing_serving_before() -> None:
    plan = _plan((10, 100))
    assert traffic_steps(plan, "blue", None, routed=True) == [{"blue": 100}]
    assert traffic_steps(plan, "blue", None, routed=False) == [{"blue": 10}, {"blue": 100}]
    assert traffic_steps(plan, "green", "blue") == [{"green": 10, "blue": 90}, {"green": 100, "blue": 0}]
