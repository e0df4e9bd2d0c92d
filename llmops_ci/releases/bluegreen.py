"""Blue/green, once for every release target: the new version goes to the idle slot, is smoke-tested there
directly, then takes traffic step by step; any failure leaves the slot that served before serving.

A target supplies what it does to its endpoint's slots (``Slots``); ``roll_out`` decides what happens when.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

from llmops_ci.releases.spec import DeployPlan, DeployResult, SmokeResult, SmokeTest

log = logging.getLogger("llmops_ci.bluegreen")

Stage = Literal["start", "smoke", "traffic"]


class Slots(Protocol):
    """One deploy's view of an endpoint's two slots (blue and green)."""

    previous: str | None  # the slot that serves before this deploy
    slot: str  # the idle slot the new version goes to
    traffic: dict[str, int]  # what serves now, per slot
    url: str | None  # where the endpoint (or the new slot) answers
    # True when the endpoint itself splits traffic by shares (a cloud endpoint): a share below 100 % needs a slot
    # serving beside it. False when each slot answers at its own address and a step only announces itself.
    routed: bool

    def start(self) -> str | None:
        """Put the new version in ``slot`` and wait until it is up: None, or why it is not."""
        ...

    def smoke(self, test: SmokeTest) -> SmokeResult:
        """One smoke test against ``slot`` directly, not through the endpoint's traffic."""
        ...

    def shift(self, traffic: dict[str, int]) -> str | None:
        """Route this share of traffic to each slot: None, or why it could not."""
        ...

    def promote(self) -> str | None:
        """Make ``slot`` the serving one for good (the endpoint's state, a registry alias): what to report, if
        anything."""
        ...

    def roll_back(self, failure: str, stage: Stage, traffic: dict[str, int]) -> str:
        """Put all traffic back on ``previous`` (``traffic``: where the rollout left it); the message to report."""
        ...

    def close(self, deployed: bool) -> None:
        """Called last, whatever happened: stop what ``start`` started, or leave it serving."""
        ...


def traffic_steps(plan: DeployPlan, slot: str, previous: str | None, routed: bool = True) -> list[dict[str, int]]:
    """The traffic after each step. With nothing serving before, a routed endpoint goes straight to 100."""
    if previous is None:
        return [{slot: 100}] if routed else [{slot: p} for p in plan.traffic]
    steps = [{slot: p, previous: 100 - p} for p in plan.traffic if 0 < p < 100]
    return [*steps, {slot: 100, previous: 0}]


def smoke_failure(results: list[SmokeResult]) -> str | None:
    """The failed smoke tests as one message, or None when every one passed."""
    return "; ".join(f"smoke test {s.name}: {s.error}" for s in results if not s.passed) or None


def live(traffic: dict[str, int]) -> dict[str, int]:
    return {k: int(v) for k, v in traffic.items() if int(v) > 0}


def roll_out(plan: DeployPlan, slots: Slots) -> DeployResult:
    """Deploy ``plan`` through ``slots``: ``deployed``, or ``rolled_back`` with the slot that served before still
    serving. Exceptions (bad credentials, an interrupt) propagate after ``close``."""
    slot, previous = slots.slot, slots.previous
    result = DeployResult(plan.endpoint, slot, previous, "rolled_back", dict(slots.traffic), url=slots.url)
    try:
        stage: Stage = "start"
        failure = slots.start()
        if failure is None:
            stage = "smoke"
            for test in plan.smoke_tests:  # reported as they run, before any traffic moves
                smoke = slots.smoke(test)
                result.smoke.append(smoke)
                log.info("%s: smoke test %s on %s: %s", plan.endpoint, test.name, slot,
                         "passed" if smoke.passed else smoke.error)
            failure = smoke_failure(result.smoke)
        if failure is None:
            stage = "traffic"
            for traffic in traffic_steps(plan, slot, previous, slots.routed):
                log.info("%s: traffic %s", plan.endpoint, ", ".join(f"{k} {v}%" for k, v in traffic.items()))
                failure = slots.shift(traffic)
                if failure is not None:
                    break
                result.traffic = live(traffic)
        if failure is not None:
            result.message = slots.roll_back(failure, stage, result.traffic)
            if stage != "start":  # the rollback put all traffic on the slot that served before
                result.traffic = {previous: 100} if previous else {}
            return result
        result.message = slots.promote()
        result.traffic = {slot: 100}
        # only once promoted (the endpoint's state names the slot): interrupted before, close must stop it
        result.status = "deployed"
        return result
    finally:
        slots.close(result.status == "deployed")
