"""Run flows and evaluations through a backend, keep the results, and decide pass or fail."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_ci import repeats
from llmops_ci.backends import Backend
from llmops_ci.config import FlowSpec
from llmops_ci.errors import CheckFailed, ServiceError, UsageError
from llmops_ci.gate_keys import save_line_keys
from llmops_ci.progress import Progress
from llmops_ci.project import Project
from llmops_ci.runs import (
    RunOptions,
    RunRecord,
    batch_job,
    eval_jobs,
    keep_base,
    load_run,
    run_dir,
    save_run,
    secret_values,
    update_flow_summary,
)

log = logging.getLogger("llmops_ci.run")

ProgressFactory = Callable[[str, int], Progress]


@dataclass(frozen=True)
class RunContext:
    """What a run needs from outside: the backend, where state goes, the environment and how to show progress."""

    backend: Backend
    state_dir: Path
    environ: Mapping[str, str]
    progress: ProgressFactory
    on_secret: Callable[[str], None]


def one_line(text: Any, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _report(record: RunRecord, summary: dict[str, Any], allowed: int | None) -> None:
    failed = summary["lines_failed"]
    tokens = summary["tokens"]["total"]
    if record.failed_as_a_whole:
        log.error("%s: the run failed as a whole before its %d line%s ran: %s", record.label, record.lines_total,
                  "s" if record.lines_total != 1 else "", one_line(record.error or f"it ended {record.status}"))
        return
    log.info("%s: %s, %d/%d lines ok in %.1f s (p50 %s s, p95 %s s, %d tokens)", record.label, summary["status"],
             record.lines_total - failed, record.lines_total, record.duration_s, summary["latency_p50"],
             summary["latency_p95"], tokens)
    if record.error:
        log.error("%s: %s", record.label, one_line(record.error))
    if failed:
        allowance = f" (allowed {allowed})" if allowed is not None else ""
        report = log.error if allowed is not None and failed > allowed else log.warning
        report("%s: %d line%s failed%s", record.label, failed, "s" if failed != 1 else "", allowance)
        for line in record.failed[:5]:
            report("  line %d%s: %s", line.line + 1, f" (node {line.node})" if line.node else "",
                   one_line(line.error))


def _execute(project: Project, rc: RunContext, job: Any) -> RunRecord:
    _check_job(rc, job)
    rows = project.data(job.data).rows
    record = rc.backend.run(job, rc.progress(job.label, rows))
    record.data_lines = rows
    return record


def _check_job(rc: RunContext, job: Any) -> None:
    for secret in secret_values(job.provider_connections):
        rc.on_secret(secret)
    if job.cache is not None and not rc.backend.routes_local_proxy:
        raise UsageError(f"{job.label}: --backend {rc.backend.name} runs flows where the local LLM cache cannot "
                         f"reach them, so llm_cache mode '{job.cache.mode}' cannot be honoured; run with "
                         "--llm-cache off (it overrides llmops.yaml's llm_cache.mode), or on --backend local")


def _records(project: Project, rc: RunContext, jobs: list[Any]) -> Iterator[RunRecord]:
    """One record per job, in order: all at once from a backend with ``run_many`` (remote runs submitted
    together and awaited together), side by side on one with ``parallel_runs``, else one after the other."""
    run_many = getattr(rc.backend, "run_many", None)
    if run_many is None:
        yield from _execute_all(project, rc, jobs)
        return
    for job in jobs:
        _check_job(rc, job)
    for job, record in zip(jobs, run_many(jobs, rc.progress), strict=True):
        record.data_lines = project.data(job.data).rows
        yield record


def _local_connections(rc: RunContext) -> bool:
    return bool(getattr(rc.backend, "needs_local_connections", True))


def _endpoint_down(rc: RunContext, record: RunRecord) -> str | None:
    """Why the run's LLM endpoint is down, when every line failed on it (None: it is not, or some line passed)."""
    if not record.lines or len(record.failed) != len(record.lines):
        return None
    found = getattr(rc.backend, "endpoint_down", None)
    detail = found(record.name) if found is not None else None  # what the LLM proxy saw of the endpoint
    reasons = [r for r in (record.service_down(), str(detail) if detail else None) if r]
    return "; ".join(reasons) or None


def _execute_all(project: Project, rc: RunContext, jobs: list[Any]) -> Iterator[RunRecord]:
    """The records of ``jobs`` in their order. A backend with ``parallel_runs`` gets them all at once (it shares
    ``--workers`` lines in flight among them); the next record is yielded as soon as it and those before it are in."""
    if len(jobs) < 2 or not getattr(rc.backend, "parallel_runs", False):
        for job in jobs:
            yield _execute(project, rc, job)
        return
    pool = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="llmops-run")
    try:
        futures = [pool.submit(_execute, project, rc, job) for job in jobs]
        for future in futures:
            yield future.result()
    finally:  # on an interrupt the backend's close() releases the runs still waiting; do not wait for them here
        pool.shutdown(wait=False, cancel_futures=True)


def batch_run(project: Project, flows: list[FlowSpec], options: RunOptions, rc: RunContext) -> list[dict[str, Any]]:
    """Run each flow over its data; raise CheckFailed when failed lines exceed a flow's allowance."""
    jobs = [(flow, repeats.job(rc.state_dir, flow, batch_job(project, flow, options, rc.environ,
                                                             local_connections=_local_connections(rc)), write=True))
            for flow in flows]  # env checked up front
    summaries: list[dict[str, Any]] = []
    broken: list[str] = []
    whole: list[str] = []
    down: dict[str, str] = {}
    for (flow, job), record in zip(jobs, _records(project, rc, [job for _, job in jobs]), strict=True):
        keep_base(rc.state_dir, record, job.data)  # what eval-run scores, whichever engine made the run
        if flow.repeats > 1:  # kept above by repeated line; from here on by data line and repeat
            repeats.fold(record, flow.repeats, project.data(flow.data).rows if flow.data else None)
        endpoint = _endpoint_down(rc, record)
        # an allowance of failed lines is for bad lines, not for an endpoint that answered none of them
        allowed = 0 if endpoint and flow.max_failed_lines is not None else flow.max_failed_lines
        summary = save_run(rc.state_dir, record, allowed)
        # what pairs these lines with a baseline's, and their clusters (the gate reads it)
        save_line_keys(run_dir(rc.state_dir, flow.name), flow, ((line.line, line.inputs) for line in record.lines))
        update_flow_summary(rc.state_dir, flow.name, "run", {k: v for k, v in summary.items() if k != "metrics"})
        _report(record, summary, allowed)
        summaries.append(summary)
        if summary["status"] != "completed":
            if endpoint:
                down[flow.name] = endpoint
            else:
                (whole if record.failed_as_a_whole else broken).append(flow.name)
    if down and not broken and not whole:
        raise ServiceError("every line failed reaching an outside service (" + ", ".join(
            f"{name}: {failure}" for name, failure in down.items()) + "); check that the endpoint is up and that "
            "the connection's base URL and key are right")
    problems = [f"{name} failed as a whole (see its error above)" for name in whole]
    if broken or down:
        names = broken + list(down)
        problems.append(f"{', '.join(names)} had more failed lines than max_failed_lines allows (see the errors "
                        "above and " + ", ".join(str(run_dir(rc.state_dir, n) / "lines.jsonl") for n in names) + ")")
    if problems:
        raise CheckFailed("batch-run failed: " + "; ".join(problems))
    return summaries


def eval_run(project: Project, flows: list[FlowSpec], options: RunOptions, rc: RunContext) -> dict[str, Any]:
    """Run every evaluation of each flow against that flow's batch run from the state dir."""
    plans = []
    for flow in flows:
        if not flow.evaluations:
            log.info("%s: no evaluations configured", flow.name)
            continue
        base = load_run(rc.state_dir, flow.name)
        if base is None:
            raise UsageError(f"flow '{flow.name}' has no batch run in {rc.state_dir}; run "
                             f"'llmops-ci batch-run --flow {flow.name}' first (with the same --state-dir)")
        if flow.repeats > 1 and any(e.data not in (None, flow.data) for e in flow.evaluations.values()):
            raise UsageError(f"flow '{flow.name}': repeats: {flow.repeats} runs each line of the flow's data several "
                             "times, so its evaluations must score that data: remove 'data:' from its evaluations")
        plans.append((flow, [repeats.job(rc.state_dir, flow, job, write=False) for job in eval_jobs(
            project, flow, str(base["name"]), options, rc.environ, local_connections=_local_connections(rc))]))
    results: dict[str, Any] = {}
    failed = []
    flat = [(flow, job) for flow, jobs in plans for job in jobs]
    for (flow, job), record in zip(flat, _records(project, rc, [job for _, job in flat]), strict=True):
        if flow.repeats > 1:
            repeats.fold(record, flow.repeats, project.data(flow.data).rows if flow.data else None)
        summary = save_run(rc.state_dir, record, None)
        evaluation = job.label.split("/", 1)[1]
        entry = {"run": record.name, "status": summary["status"], "metrics": record.metrics,
                 "lines_total": summary["lines_total"], "lines_failed": summary["lines_failed"]}
        update_flow_summary(rc.state_dir, flow.name, "evaluations", {evaluation: entry})
        _report(record, summary, None)
        if record.metrics:
            log.info("%s: %s", job.label, ", ".join(f"{k} = {v}" for k, v in sorted(record.metrics.items())))
        results[job.label] = entry
        if summary["status"] != "completed":
            failed.append(job.label)
    if failed:
        raise CheckFailed(f"evaluation run failed for {', '.join(failed)}")
    return results
