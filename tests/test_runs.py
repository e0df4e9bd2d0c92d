from __future__ import annotations

import io
import logging

import pytest

from llmops_ci.progress import Progress
from llmops_ci.runs import LineResult, RunRecord, percentile


def line(n: int, status: str = "Completed", duration: float = 1.0, code: str | None = None,
         error: str | None = None) -> LineResult:
    return LineResult(n, status, {}, {}, duration, {"prompt": 2, "completion": 1, "total": 3}, error, code)


def test_percentiles_interpolate() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile(list(map(float, range(1, 101))), 0.95) == pytest.approx(95.05)


def test_record_summary() -> None:
    record = RunRecord("f", "run1", "Completed", [line(0, duration=1), line(1, "Failed", 3, "X", "bad\nthing"),
                                                   line(2, duration=2)], 5.0)
    summary = record.summary(allowed_failures=0)
    assert summary["status"] == "failed" and summary["lines_failed"] == 1
    assert summary["tokens"] == {"prompt": 6, "completion": 3, "total": 9}
    assert (summary["latency_p50"], summary["latency_p95"]) == (2.0, 2.9)
    assert record.summary(allowed_failures=1)["status"] == "completed"
    assert RunRecord("f", "r", "Failed", [], 1.0, error="x").summary(None)["status"] == "failed"


def test_service_down_only_when_every_line_failed_on_the_endpoint() -> None:
    down = [line(0, "Failed", code="APIConnectionError", error="Connection error."),
            line(1, "Failed", code="APIConnectionError", error="Connection error.")]
    assert RunRecord("f", "r", "Completed", down, 1.0).service_down()
    assert not RunRecord("f", "r", "Completed", [*down, line(2)], 1.0).service_down()
    bad_request = [line(0, "Failed", code="OpenAIError", error="Error code: 400 - bad")]
    assert not RunRecord("f", "r", "Completed", bad_request, 1.0).service_down()


def test_progress_logs_in_ci_and_draws_on_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("llmops_ci")
    logger.propagate = True
    caplog.set_level(logging.INFO, logger="llmops_ci.progress")
    ci = Progress("flow", 10, io.StringIO(), live=False, interval=0)
    ci.update(3)
    assert "flow: 3/10 lines" in caplog.text
    term = io.StringIO()
    bar = Progress("flow", 10, term, live=True)
    bar.update(5)
    bar.finish(10)
    assert "\rflow: [###############...............] 5/10 lines" in term.getvalue()
    assert term.getvalue().endswith("\n")
