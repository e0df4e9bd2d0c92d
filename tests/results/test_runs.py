from __future__ import annotations

import io
import logging
from collections.abc import Callable

import pytest

from llmops_ci.core.errors import ConfigError
from llmops_ci.core.progress import Progress
from llmops_ci.core.service_errors import service_failure
from llmops_ci.results.records import LineResult, RunRecord, percentile
from tests.helpers.projects import Project


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


def chain(*types: tuple[str, str]) -> dict:
    """A line error as prompt flow records it: the exception chain in debugInfo, innermost last."""
    inner = None
    for name, message in reversed(types):
        inner = {"type": name, "message": message, "stackTrace": "...", "innerException": inner}
    return {"message": "Execution failure in 'ask'", "code": "UserError",
            "innerError": {"code": "ToolExecutionError", "innerError": None},
            "additionalInfo": [{"type": "ToolExecutionErrorDetails", "info": {"type": types[1][0]}}],
            "debugInfo": inner}


# the shapes come from real runs (a Python tool's own OpenAI client; an LLM node wraps them as WrappedOpenAIError)
REFUSED = chain(("ToolExecutionError", "x"), ("APIConnectionError", "Connection error."),
                ("ConnectError", "[Errno 111] Connection refused"), ("ConnectError", "[Errno 111] Connection refused"))
DNS = chain(("ToolExecutionError", "x"), ("APIConnectionError", "Connection error."),
            ("ConnectError", "[Errno -2] Name or service not known"))
TLS = chain(("ToolExecutionError", "x"), ("ConnectionError", "HTTPSConnectionPool ..."),
            ("MaxRetryError", "..."), ("SSLError", "[SSL: WRONG_VERSION_NUMBER] wrong version number"))
TIMEOUT = chain(("WrappedOpenAIError", "x"), ("APITimeoutError", "Request timed out."), ("ReadTimeout", "timed out"))
SERVER = chain(("WrappedOpenAIError", "x"), ("InternalServerError", "Error code: 500"))
BAD_REQUEST = chain(("WrappedOpenAIError", "x"), ("BadRequestError", "Error code: 400 - bad"))
OWN_BUG = chain(("ToolExecutionError", "x"), ("ValueError", "cannot shout boom"))


@pytest.mark.parametrize(("error", "expected"), [
    (REFUSED, "connection refused"), (DNS, "DNS"), (TLS, "TLS"), (TIMEOUT, "timeout"),
    (SERVER, "server error after retries"), (BAD_REQUEST, None), (OWN_BUG, None), ({}, None)])
def test_service_failure_is_classified_by_the_exception_chain(error: dict, expected: str | None) -> None:
    assert service_failure(error) == expected


def test_service_down_only_when_every_line_failed_on_an_outside_service() -> None:
    down = [line(0, "Failed", error="Connection error."), line(1, "Failed", error="Connection error.")]
    for failed in down:
        failed.service_failure = "connection refused"
    assert RunRecord("f", "r", "Completed", down, 1.0).service_down() == "connection refused"
    assert RunRecord("f", "r", "Completed", [*down, line(2)], 1.0).service_down() is None
    assert RunRecord("f", "r", "Completed", [*down, line(2, "Failed", error="bug")], 1.0).service_down() is None


def test_a_run_that_failed_as_a_whole_counts_the_data_lines() -> None:
    record = RunRecord("f", "r", "Failed", [], 1.0, error="No module named 'nltk'", data_lines=3)
    summary = record.summary(allowed_failures=5)
    assert (summary["status"], summary["lines_total"], summary["lines_failed"]) == ("failed", 3, 3)
    assert record.failed_as_a_whole and summary["error"] == "No module named 'nltk'"


def test_error_lines_are_one_based() -> None:
    record = RunRecord("f", "r", "Completed", [line(0), line(1, "Failed", error="bad")], 1.0)
    assert record.summary(None)["errors"] == [{"line": 2, "node": None, "message": "bad"}]


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


def test_replay_needs_no_value_only_a_live_call_would(project: Callable[..., Project]) -> None:
    from llmops_ci.project.loaded import load_project
    from llmops_ci.results.records import RunOptions, batch_job

    proj = project()
    proj.replace("llmops.yaml", "    variant: ${classify.variant_0}\n", "    variant: ${classify.variant_0}\n"
                 "    environment_variables:\n      OPENAI_KEY_FOR_TOOLS: ${env:OPENAI_API_KEY}\n"
                 "      BASE: ${openai.base_url}\n")
    environ = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}  # no OPENAI_API_KEY
    loaded = load_project(proj.path("llmops.yaml"))
    (flow,) = loaded.config.select(["classify"])
    job = batch_job(loaded, flow, RunOptions(llm_cache="replay"), environ)
    assert job.environment_variables == {"OPENAI_KEY_FOR_TOOLS": "", "BASE": "http://127.0.0.1:9/v1"}
    with pytest.raises(ConfigError, match="environment variable OPENAI_API_KEY is not set"):
        batch_job(loaded, flow, RunOptions(llm_cache="off"), environ)
