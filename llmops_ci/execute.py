"""Run flows and evaluations through a backend, keep the results, and decide pass or fail."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_ci import parity
from llmops_ci.config import FlowSpec
from llmops_ci.core.errors import CheckFailed, ServiceError, UsageError
from llmops_ci.core.log import number
from llmops_ci.core.progress import Progress
from llmops_ci.core.yamldoc import display_path
from llmops_ci.engines.base import Backend
from llmops_ci.gate import repeats
from llmops_ci.gate.keys import save_line_keys
from llmops_ci.gate.scored import scored_wrong
from llmops_ci.project.loaded import Project
from llmops_ci.results.provenance import config_id, data_hash, evaluation_hash, flow_hash, now
from llmops_ci.results.records import RunJob, RunOptions, RunRecord, batch_job, eval_jobs, secret_values
from llmops_ci.results.state import start_evaluations, start_flow, write_json_atomic
from llmops_ci.results.store import base_dir, keep_base, load_run, run_dir, save_run, update_flow_summary

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
    log.info("%s: %s, %d/%d lines ok in %s s (p50 %s s, p95 %s s, %d tokens)", record.label, summary["status"],
             record.lines_total - failed, record.lines_total, number(record.duration_s, 3),
             number(summary["latency_p50"], 3), number(summary["latency_p95"], 3), tokens)
    if record.error:
        log.error("%s: %s", record.label, one_line(record.error))
    if failed:
        allowance = f" (allowed {allowed})" if allowed is not None else ""
        report = log.error if allowed is not None and failed > allowed else log.warning
        report("%s: %d line%s failed%s", record.label, failed, "s" if failed != 1 else "", allowance)
        for line in record.failed[:5]:
            report("  line %d%s: %s", line.line + 1, f" (node {line.node})" if line.node else "",
                   one_line(line.error))


def base_lines(state_dir: Path, base_run: str, rows: int) -> list[int] | None:
    """The data lines a run over ``base_run`` gets: prompt flow joins the data with the base run's outputs by line
    number and skips lines missing from either (a base line that failed has no outputs). None: not known here."""
    path = base_dir(state_dir, base_run) / "outputs.jsonl"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    numbers = set()
    for raw in text.splitlines():
        try:
            number = json.loads(raw).get("line_number")
        except (ValueError, AttributeError):
            continue
        if isinstance(number, int) and 0 <= number < rows:
            numbers.add(number)
    return sorted(numbers)


def _lines_expected(project: Project, rc: RunContext, job: RunJob) -> list[int]:
    """The data lines (0-based) a run gets: its data's, or over a base run those that both the data and the base
    run's outputs have (prompt flow skips a line whose base line failed)."""
    rows = project.data(job.data).rows
    joined = base_lines(rc.state_dir, job.base_run, rows) if job.base_run is not None else None
    return list(range(rows)) if joined is None else joined


def _execute(project: Project, rc: RunContext, job: RunJob) -> RunRecord:
    _check_job(rc, job)
    expected = _lines_expected(project, rc, job)
    record = rc.backend.run(job, rc.progress(job.label, len(expected)))
    record.data_lines, record.line_numbers = len(expected), expected
    return record


def _check_job(rc: RunContext, job: RunJob) -> None:
    accepts = rc.backend.engines
    if getattr(job, "evaluator", None) and accepts is not None and "evaluator" not in accepts:
        raise UsageError(f"{job.label}: an evaluator or scorer ({job.evaluator}) runs on --backend local only; "
                         f"--backend {rc.backend.name} cannot run it")
    for secret in secret_values(job.provider_connections):
        rc.on_secret(secret)
    if job.cache is not None and not rc.backend.routes_local_proxy:
        raise UsageError(f"{job.label}: --backend {rc.backend.name} runs flows where the local LLM cache cannot "
                         f"reach them, so llm_cache mode '{job.cache.mode}' cannot be honoured; run with "
                         "--llm-cache off (it overrides llmops.yaml's llm_cache.mode), or on --backend local")


def _records(project: Project, rc: RunContext, jobs: list[RunJob]) -> Iterator[RunRecord]:
    """One record per job, in order: all at once from a backend that ``submits_together`` (remote runs submitted
    together and awaited together), side by side on one with ``parallel_runs``, else one after the other."""
    if not rc.backend.submits_together:
        yield from _execute_all(project, rc, jobs)
        return
    for job in jobs:
        _check_job(rc, job)
    for job, record in zip(jobs, rc.backend.run_many(jobs, rc.progress), strict=True):
        expected = _lines_expected(project, rc, job)
        record.data_lines, record.line_numbers = len(expected), expected
        yield record


def _local_connections(rc: RunContext) -> bool:
    return rc.backend.needs_local_connections


def _endpoint_down(rc: RunContext, record: RunRecord) -> str | None:
    """Why the run's LLM endpoint is down, when every line failed on it (None: it is not, or some line passed)."""
    if not record.lines or len(record.failed) != len(record.lines):
        return None
    detail = rc.backend.endpoint_down(record.name)  # what the LLM proxy saw of the endpoint
    reasons = [r for r in (record.service_down(), str(detail) if detail else None) if r]
    return "; ".join(reasons) or None


def _execute_all(project: Project, rc: RunContext, jobs: list[RunJob]) -> Iterator[RunRecord]:
    """The records of ``jobs`` in their order. A backend with ``parallel_runs`` gets them all at once (it shares
    ``--workers`` lines in flight among them); the next record is yielded as soon as it and those before it are in."""
    if len(jobs) < 2 or not rc.backend.parallel_runs:
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
    flows = parity.with_compared(project.config, flows, current=lambda other: _current_run(project, rc, other))
    jobs = [(flow, repeats.job(rc.state_dir, flow, batch_job(project, flow, options, rc.environ,
                                                             local_connections=_local_connections(rc)), write=True))
            for flow in flows]  # env checked up front
    started = {flow.name: _start_batch(project, rc, flow, job) for flow, job in jobs}
    summaries: list[dict[str, Any]] = []
    broken: list[str] = []
    whole: list[str] = []
    empty: list[str] = []  # every line failed: such a run never passes, whatever max_failed_lines allows
    down: dict[str, str] = {}
    for (flow, job), record in zip(jobs, _records(project, rc, [job for _, job in jobs]), strict=True):
        keep_base(rc.state_dir, record, job.data)  # what eval-run scores, whichever engine made the run
        if flow.repeats > 1:  # kept above by repeated line; from here on by data line and repeat
            repeats.fold(record, flow.repeats, project.data(flow.data).rows if flow.data else None)
        endpoint = _endpoint_down(rc, record)
        # an allowance of failed lines is for bad lines, not for an endpoint that answered none of them
        allowed = 0 if endpoint and flow.max_failed_lines is not None else flow.max_failed_lines
        summary = save_run(rc.state_dir, record, allowed, started[flow.name])
        # what pairs these lines with a baseline's, and their clusters (the gate reads it)
        save_line_keys(run_dir(rc.state_dir, flow.name), flow, ((line.line, line.inputs) for line in record.lines))
        update_flow_summary(rc.state_dir, flow.name, "run", {k: v for k, v in summary.items() if k != "metrics"})
        _report(record, summary, allowed)
        summaries.append(summary)
        if summary["status"] != "completed":
            if endpoint:
                down[flow.name] = endpoint
            elif record.failed_as_a_whole:
                whole.append(flow.name)
            elif summary["lines_total"] and summary["lines_failed"] == summary["lines_total"]:
                empty.append(flow.name)
            else:
                broken.append(flow.name)
    if down and not broken and not whole and not empty:
        raise ServiceError("every line failed reaching an outside service (" + ", ".join(
            f"{name}: {failure}" for name, failure in down.items()) + "); check that the endpoint is up and that "
            "the connection's base URL and key are right")
    problems = [f"{name} failed as a whole (see its error above)" for name in whole]
    problems += [f"every line of {name} failed (see the errors above): a run with no line done never passes, "
                 "whatever max_failed_lines allows" for name in empty]
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
        base = _finished_base(rc, flow)
        if flow.repeats > 1 and any(e.data not in (None, flow.data) for e in flow.evaluations.values()):
            raise UsageError(f"flow '{flow.name}': repeats: {flow.repeats} runs each line of the flow's data several "
                             "times, so its evaluations must score that data: remove 'data:' from its evaluations")
        jobs = eval_jobs(project, flow, str(base["name"]), options, rc.environ,
                         local_connections=_local_connections(rc))
        _check_same_data(flow, jobs, base)  # on the data as written, before repeats lay it out again
        plans.append((flow, base, [repeats.job(rc.state_dir, flow, job, write=False) for job in jobs]))
    for flow in flows:  # parity needs both flows' runs on the same data: said before anything runs
        if flow.parity is not None:
            other = parity.check_same_data(project.config, flow)
            for name in (flow.name, other.name):
                if load_run(rc.state_dir, name) is None:
                    raise UsageError(f"flow '{name}' has no batch run in {rc.state_dir}; parity of '{flow.name}' "
                                     f"compares it with '{other.name}': run 'llmops-ci batch-run --flow {name}' first "
                                     "(with the same --state-dir)")
    started: dict[str, dict[str, Any]] = {}
    for flow, base, jobs in plans:
        entries = {}
        for job in jobs:
            assert job.evaluation is not None  # eval_jobs makes one job per evaluation
            evaluation = flow.evaluations[job.evaluation]
            started[job.label] = {"base_run": base["name"], "flow_hash": evaluation_hash(evaluation, job.info),
                                  "data_hash": data_hash(_source_data(flow, job)), "started": now()}
            entries[evaluation.name] = {"run": job.name, **start_run(rc.state_dir, job.flow, job.evaluation,
                                                                     job.name, started[job.label])}
            entries[evaluation.name].pop("name")
        start_evaluations(rc.state_dir, flow.name, entries)
    results: dict[str, Any] = {}
    failed = []
    flat = [(flow, job) for flow, _, jobs in plans for job in jobs]
    for (flow, job), record in zip(flat, _records(project, rc, [job for _, job in flat]), strict=True):
        if flow.repeats > 1:
            repeats.fold(record, flow.repeats, project.data(flow.data).rows if flow.data else None)
        summary = save_run(rc.state_dir, record, None, started[job.label])
        ename = str(job.evaluation)
        entry = {"run": record.name, "status": summary["status"], "metrics": record.metrics,
                 "lines_total": summary["lines_total"], "lines_failed": summary["lines_failed"],
                 **{k: summary[k] for k in ("base_run", "flow_hash", "data_hash", "started", "finished")}}
        if summary.get("error"):
            entry["error"] = summary["error"]
        if summary.get("llm_cache"):  # a judge's replayed answers are what its scores rest on
            entry["llm_cache"] = summary["llm_cache"]
        scores = flow.evaluations[ename].scores if ename in flow.evaluations else {}
        wrong = scored_wrong(rc.state_dir, flow.name, record.lines, scores) if scores and flow.repeats == 1 else None
        if wrong is not None:  # the comment's "lines scored wrong" (scored.py)
            entry["scored_wrong"] = wrong
        update_flow_summary(rc.state_dir, flow.name, "evaluations", {ename: entry})
        rows = project.data(job.data).rows
        if record.lines_total < rows:
            log.info("%s: %d of %d data lines evaluated: the others failed in the base run %s, and prompt flow "
                     "skips a line whose base line has no outputs", job.label, record.lines_total, rows, job.base_run)
        _report(record, summary, None)
        if record.metrics:
            log.info("%s: %s", job.label, ", ".join(f"{k} = {number(v)}" for k, v in sorted(record.metrics.items())))
        elif summary["status"] == "completed":
            log.warning("%s: the evaluation logged no metrics", job.label)
        results[job.label] = entry
        if summary["status"] != "completed":
            if record.lines_total and record.lines_failed >= record.lines_total and not record.failed_as_a_whole:
                log.error("%s: every evaluated line failed; no metric can be trusted", job.label)
            elif record.lines_total == 0:
                log.error("%s: no line to evaluate: every line of the base run %s failed", job.label, job.base_run)
            failed.append(job.label)
    for flow in flows:
        if flow.parity is not None:
            label, entry = parity_run(project, flow, options, rc)
            results[label] = entry
            if entry["status"] != "completed":
                failed.append(label)
    if failed:
        raise CheckFailed(f"evaluation run failed for {', '.join(failed)}")
    return results


def parity_run(project: Project, flow: FlowSpec, options: RunOptions, rc: RunContext) -> tuple[str, dict[str, Any]]:
    """The ``parity`` evaluation of ``flow`` against the flow it replaces (see parity.py)."""
    started = time.monotonic()
    other = parity.check_same_data(project.config, flow)
    pairs = parity.pair_lines(parity.read_lines(rc.state_dir, flow.name), parity.read_lines(rc.state_dir, other.name))
    job = parity.judge_job(project.config, flow, pairs, options, rc.environ, rc.state_dir / "work" / "parity")
    judged = None
    if job is not None:
        _check_job(rc, job)
        judged = rc.backend.run(job, rc.progress(job.label, sum(1 for p in pairs if p.new and p.old)))
    record = parity.parity_record(flow, pairs, judged, time.monotonic() - started)
    summary = save_run(rc.state_dir, record, None)
    parity.write_pairs(rc.state_dir, flow.name, pairs)
    entry = parity.summary_entry(flow, record, summary)
    update_flow_summary(rc.state_dir, flow.name, "evaluations", {parity.NAME: entry})
    _report(record, summary, None)
    log.info("%s: agreement with %s = %s (%d lines, %d disagree)", record.label, other.name,
             number(record.metrics.get("agreement")), record.metrics.get("lines", 0),
             record.metrics.get("disagreements", 0))
    return record.label, entry


def start_run(state_dir: Path, flow: str, evaluation: str | None, name: str,
              provenance: dict[str, Any]) -> dict[str, Any]:
    """The run's entry while it runs: ``incomplete`` until ``save_run`` replaces it, so a run that never finishes
    (SIGKILL, OOM, a lost runner) is never read as the one before it."""
    folder = run_dir(state_dir, flow, evaluation)
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"name": name, "status": "incomplete", **provenance}
    write_json_atomic(folder / "run.json", entry)
    (folder / "lines.jsonl").unlink(missing_ok=True)
    return entry


def _start_batch(project: Project, rc: RunContext, flow: FlowSpec, job: RunJob) -> dict[str, Any]:
    """What the run rests on, kept before it starts: the flow's entry says ``incomplete`` until the run ends."""
    provenance = {"flow_hash": flow_hash(flow, job.info), "data_hash": data_hash(_source_data(flow, job)),
                  "started": now(), **({"variant": flow.variant} if flow.variant else {})}
    entry = start_run(rc.state_dir, flow.name, None, job.name, provenance)
    start_flow(rc.state_dir, flow.name, {"config": config_id(project.config.path), "run": entry})
    return provenance


def _current_run(project: Project, rc: RunContext, flow: FlowSpec) -> bool:
    """The flow's batch run in the state dir finished on its content and data as they are now: running it again
    would give the same lines and drop its evaluations for nothing."""
    run = load_run(rc.state_dir, flow.name)
    if run is None or run.get("status") != "completed" or not run.get("flow_hash") or flow.data is None:
        return False
    return run["flow_hash"] == flow_hash(flow, project.info(flow.path)) and run.get("data_hash") == data_hash(flow.data)


def _source_data(flow: FlowSpec, job: RunJob) -> Path:
    """The data a run rests on: the flow's own file, also when ``repeats:`` runs a copy with each line repeated."""
    return flow.data if flow.repeats > 1 and flow.data is not None else Path(job.data)


def _finished_base(rc: RunContext, flow: FlowSpec) -> dict[str, Any]:
    base = load_run(rc.state_dir, flow.name)
    again = f"run 'llmops-ci batch-run --flow {flow.name}' first (with the same --state-dir)"
    if base is None:
        raise UsageError(f"flow '{flow.name}' has no batch run in {rc.state_dir}; {again}")
    if base.get("status") == "incomplete":
        raise UsageError(f"flow '{flow.name}': its batch run {base.get('name')} (started {base.get('started')}) never "
                         f"finished (killed, out of memory or a lost runner), so there is nothing to evaluate; {again}")
    return base


def _check_same_data(flow: FlowSpec, jobs: list[RunJob], base: dict[str, Any]) -> None:
    """An evaluation pairs the base run's outputs with its data by line number: data changed since the run read
    it would pair outputs with the wrong lines."""
    if flow.data is None or not base.get("data_hash"):
        return
    for job in jobs:
        if Path(job.data).absolute() != Path(flow.data).absolute():
            continue  # data of its own: the run never read it, so there is nothing to compare with
        now_hash = data_hash(job.data)
        if now_hash != base["data_hash"]:
            raise UsageError(f"{display_path(job.data)}: changed since the batch run {base.get('name')} read it "
                             f"(data_hash {base['data_hash']}, now {now_hash}); {job.label} would pair the run's "
                             f"outputs with other lines; run 'llmops-ci batch-run --flow {flow.name}' again first")
