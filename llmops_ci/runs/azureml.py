"""Batch and evaluation runs on an Azure ML workspace, as ``pfazure run create`` makes them.

Each job becomes the run a ``run.yml`` describes (``flow``, ``data``, ``run``, ``column_mapping``, ``variant``,
``connections``, ``environment_variables``, ``resources``), loaded by prompt flow's own run loader and submitted
through promptflow-azure's ``PFClient``: the flow's snapshot (additional includes merged) and the data are
uploaded to the workspace's default datastore, the service runs the lines, and the variant and connection
overrides are applied there, by workspace connection name, exactly as ``pfazure`` passes them. All jobs are
submitted first and then awaited together; their line details and metrics become the same ``RunRecord`` as a
local run. The LLM calls happen in the cloud, so the local record/replay proxy cannot reach them.

promptflow and azure are imported only when a run is submitted: a dry run needs neither credentials nor them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_ci.config import Origin
from llmops_ci.core import redaction
from llmops_ci.core.errors import ConfigError, LlmopsError, Problem, ServiceError, UsageError
from llmops_ci.core.schema import as_dict
from llmops_ci.engines import engine_of
from llmops_ci.engines.base import PROMPT_FLOW, Backend, BackendContext, EngineUse, check_engine
from llmops_ci.engines.promptflow.home import PFHome
from llmops_ci.kinds import snapshot
from llmops_ci.results.records import (
    RUN_STATUSES,
    RunJob,
    RunRecord,
    TestJob,
    TestRecord,
    resolve_values,
    run_status,
)
from llmops_ci.runs.azureml_service import (
    compute_of,
    flow_lineage_id,
    line_result,
    pf_client_class,
    retryable,
    service_error,
)
from llmops_ci.runs.plan import Submission, dry_run_yaml, submission

if TYPE_CHECKING:
    from llmops_ci.core.progress import Progress
    from llmops_ci.kinds.base import FlowInfo

log = logging.getLogger("llmops_ci.azureml")

TERMINAL = RUN_STATUSES  # a run is awaited until it reaches one of these; its record then carries it
_PROGRESS = re.compile(r"Finished (\d+) / (\d+) lines")
PF_ENV = ("PF_HOME_DIRECTORY", "PYTHON_KEYRING_BACKEND", "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL",
           "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED", "PF_TRACING_SKIP_LOCAL_SETUP")


UNSUPPORTED = {
    "agent_framework": "'{label}' is a Microsoft Agent Framework flow; Azure ML prompt flow runs cannot run it. Run "
                       "it with --backend local (the framework runs it on this machine)",
    "prompty": "'{label}' is a .prompty file in the prompty 2.x format; Azure ML prompt flow runs read only prompt "
               "flow's prompty format (model: {api, configuration, parameters}). Run it with --backend local (the "
               "prompty package runs it), or call it from a flex flow",
}


@dataclass(frozen=True)
class Polling:
    """How long to wait for what: every wait is bounded."""

    first_s: float = 5.0  # the first status check after submission
    max_s: float = 30.0  # back-off ceiling: a run ends at most this long before we notice (bench/azureml_runs_sim.py)
    factor: float = 1.5  # back-off growth while nothing changes
    timeout_s: float = 8 * 3600.0  # a run still going after this is canceled (exit 3)
    call_timeout_s: float = 180.0  # one service call that does not answer
    transient_limit: int = 5  # consecutive failed status checks (429/5xx) before giving up


# ---------------------------------------------------------------------------------------------- in flight


@dataclass
class _Flight:
    job: RunJob
    progress: Progress
    portal: str | None = None
    status: str = "NotStarted"
    done: int = 0
    log_seen: int = 0
    failures: int = 0
    record: RunRecord | None = None
    started: float = 0.0
    running_since: float = 0.0  # when its current status was first seen


class AzureMLRuns(Backend):
    """The run ``Backend`` of ``--backend azureml``; reaches the workspace only when a run is submitted."""

    name = "azureml"
    routes_local_proxy = False  # the flow runs in the cloud: the local LLM cache cannot answer its calls
    needs_local_connections = False  # the workspace's connections are used, by name
    submits_together = True
    engines = frozenset({PROMPT_FLOW})

    def __init__(self, ctx: BackendContext, *, credential: Any = None, client_kwargs: dict[str, Any] | None = None,
                 polling: Polling | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.credential = credential
        self.client_kwargs = dict(client_kwargs or {})
        self.polling = polling or Polling()
        self.sleep, self.clock = sleep, clock
        self._pf: Any = None
        self._home: Path | None = None  # prompt flow's home for the client: a temporary folder, never the state dir
        self._known: dict[tuple[str, str], bool] = {}

    # -------------------------------------------------------------------------------------- protocol

    def close(self) -> None:
        """Removes prompt flow's home (its keyring file, its store) when the step's backends are closed."""
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home, self._pf = None, None

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        return self.run_many([job], lambda label, total: progress)[0]

    def test(self, job: TestJob) -> TestRecord:
        raise UsageError("'test' runs one line on this machine; use --backend local (Azure ML runs whole data "
                         "sets: batch-run, eval-run)")

    def dry_run(self, subs: Sequence[Submission]) -> str:
        self._unsupported([(sub.flow_name, sub.evaluation, sub.info) for sub in subs])
        return dry_run_yaml(list(subs), self.name, {sub.label: compute_of(sub.resources, sub.details) for sub in subs})

    def _unsupported(self, runs: list[tuple[str, str | None, FlowInfo]]) -> None:
        """Refuse flows the workspace cannot run, at the line of their ``path:`` (prompt flow's engine only)."""
        check_engine(f"--backend {self.name}", self.engines, [
            EngineUse(f"{flow}/{evaluation}" if evaluation else flow, engine_of(info),
                      functools.partial(self._origin(flow, evaluation).problem, ("path",),
                                        rule="azureml-unsupported-kind"))
            for flow, evaluation, info in runs], UNSUPPORTED)

    def _origin(self, flow_name: str, evaluation: str | None) -> Origin:
        flow = self.ctx.project.config.flows[flow_name]
        return flow.evaluations[evaluation].origin if evaluation else flow.where("path")

    def run_many(self, jobs: list[RunJob], progress_factory: Callable[[str, int], Progress]) -> list[RunRecord]:
        """Submit every job, then await them together; Ctrl-C or SIGTERM cancels what was submitted."""
        pf = self._client()
        flights: list[_Flight] = []
        with _sigterm_as_interrupt():
            try:
                self._unsupported([(job.flow, job.evaluation, job.info) for job in jobs])
                problems = [problem for job in jobs for problem in self._check(pf, job)]
                if problems:
                    raise ConfigError(problems)
                for job in jobs:
                    flights.append(self._submit(pf, job, progress_factory))
                self._await(pf, flights)
            except KeyboardInterrupt:
                self._cancel(pf, _running(flights), "interrupted")
                raise
            except LlmopsError:
                self._cancel(pf, _running(flights), "stopped by an error")
                raise
        return [f.record for f in flights if f.record is not None]

    # -------------------------------------------------------------------------------------- connecting

    def _scope(self) -> dict[str, str]:
        config = self.ctx.project.config
        if config.azureml is None:
            raise UsageError(f"{config.doc.display}: --backend azureml needs an 'azureml:' block with "
                             "subscription_id, resource_group and workspace (see docs/azureml-runs.md)")
        return resolve_values(Origin(config.doc, ("azureml",)), {
            "subscription_id": config.azureml.subscription_id, "resource_group": config.azureml.resource_group,
            "workspace_name": config.azureml.workspace}, self.ctx.environ)

    def _client(self) -> Any:
        if self._pf is not None:
            return self._pf
        scope = self._scope()
        self._home = Path(tempfile.mkdtemp(prefix="llmops-pf-"))
        home = PFHome(self._home).prepare()
        env = home.environment(self.ctx.environ, home.root / "work")
        os.environ.update({k: env[k] for k in PF_ENV})  # promptflow reads its home (telemetry off) at import
        from azure.ai.ml import MLClient

        PFClient = pf_client_class()
        credential = self.credential
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        ml = MLClient(credential, scope["subscription_id"], scope["resource_group"], scope["workspace_name"],
                      show_progress=False, **self.client_kwargs)
        self._pf = self._call(f"opening workspace {scope['workspace_name']}", lambda: PFClient(ml_client=ml))
        return self._pf

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """One service call in a daemon thread, so one that never answers cannot hang the build."""
        return self._wait(what, _start(fn))

    def _wait(self, what: str, box: queue.Queue[tuple[bool, Any]]) -> Any:
        try:
            ok, value = box.get(timeout=self.polling.call_timeout_s)
        except queue.Empty:
            raise ServiceError(f"Azure ML: {what}: no answer within {self.polling.call_timeout_s:g} s; check the "
                               "network and run again") from None
        if not ok:
            workspace = self._pf._ml_client.workspace_name if self._pf is not None else "the workspace"
            raise service_error(what, value, f"workspace {workspace}") from None
        return value

    # -------------------------------------------------------------------------------------- before submitting

    def _details(self, job: RunJob) -> dict[str, Any]:
        """The flow's run.yml settings (display_name, description, tags, runtime, identity), for its batch run;
        ``init`` goes as the run's init_kwargs, which the service stores in the run's properties in clear, so a
        secret in it is refused here."""
        flow = self.ctx.project.config.flows.get(job.flow)
        for key, value in job.init.items():
            for field_name in (value if isinstance(value, dict) else {}):
                if redaction.is_secret_name(str(field_name)):
                    origin = (flow.evaluations[job.evaluation].origin if flow is not None and job.evaluation else
                              flow.where("init") if flow is not None else None)
                    message = (f"init: {key}.{field_name} would be stored in clear in the Azure ML run's "
                               "properties (init_kwargs); give the model configuration a workspace connection "
                               "instead: {connection: <name>, ...}")
                    if origin is None:
                        raise UsageError(message)
                    raise ConfigError([origin.problem(("init", key, field_name), message, "wrong-type")])
        return dict(flow.run_details) if flow is not None and not job.evaluation else {}

    def _resources(self, job: RunJob) -> dict[str, Any]:
        flow = self.ctx.project.config.flows.get(job.flow)
        return dict(flow.resources) if flow is not None else {}

    def _check(self, pf: Any, job: RunJob) -> list[Problem]:
        """Compute and connections named by the run must exist in the workspace (exit 2 at the line naming them)."""
        problems: list[Problem] = []
        flow = self.ctx.project.config.flows.get(job.flow)
        compute = self._resources(job).get("compute")
        if isinstance(compute, str) and not self._exists(pf, "compute", compute) and flow is not None:
            problems.append(flow.where("resources").problem(
                ("resources", "compute"), f"compute '{compute}' is not in workspace {pf._ml_client.workspace_name}; "
                "create it ('az ml compute create') or use serverless: resources: {instance_type: "
                "Standard_D4as_v4}", "azureml-unknown-compute"))
        for node, name, where in self._connection_uses(job):
            if not self._exists(pf, "connection", name):
                problems.append(where(
                    f"connection '{name}' (node {node}) is not in workspace {pf._ml_client.workspace_name}; create "
                    "it there (studio > Connections, or 'az ml connection create'), or point the node at one that "
                    "exists with connections: {<node>: {connection: <name>}} in llmops.yaml"))
        return problems

    def _connection_uses(self, job: RunJob) -> Iterator[tuple[str, str, Callable[[str], Problem]]]:
        """(node, workspace connection, where it is written) for each connection the run uses."""
        rule = "azureml-unknown-connection"
        flow = self.ctx.project.config.flows.get(job.flow)
        spec = flow.evaluations.get(job.evaluation) if flow is not None and job.evaluation else None
        origin = spec.origin if spec is not None else flow.where("connections") if flow is not None else None
        for use in job.info.connections:
            override = job.connections.get(use.node, {}).get(use.field)
            if isinstance(override, str) and origin is not None:
                yield use.node, override, functools.partial(origin.problem, ("connections", use.node, use.field),
                                                            rule=rule)
            elif use.connection:
                yield use.node, use.connection, functools.partial(Problem, str(use.path), use.line, use.column,
                                                                  rule=rule)

    def _exists(self, pf: Any, kind: str, name: str) -> bool:
        if (kind, name) not in self._known:
            ops = pf._ml_client.compute if kind == "compute" else pf._ml_client.connections

            def look() -> bool:
                try:
                    ops.get(name)
                except Exception as exc:  # azure-core's ResourceNotFoundError; the others are service errors
                    if type(exc).__name__ == "ResourceNotFoundError" or getattr(exc, "status_code", None) == 404:
                        return False
                    raise
                return True

            self._known[(kind, name)] = bool(self._call(f"looking up {kind} {name}", look))
        return self._known[(kind, name)]

    # -------------------------------------------------------------------------------------- submitting

    def _submit(self, pf: Any, job: RunJob, progress_factory: Callable[[str, int], Progress]) -> _Flight:
        from promptflow._sdk.entities import Run

        sub = submission(job, self._resources(job), self._details(job))
        with tempfile.TemporaryDirectory(prefix="llmops-azrun-") as tmp:
            snap = snapshot(job.info, Path(tmp) / job.path.name)
            run = Run._load(data=sub.document(snap.entry))
            # pfazure derives the flow's lineage (and from it the compute session) from the flow's own path: from
            # the snapshot's temporary folder every CI run would be a new flow and pay a new session
            run._lineage_id = flow_lineage_id(job.path)
            log.info("%s: submitting run %s to workspace %s", job.label, job.name, pf._ml_client.workspace_name)
            submitting = _start(lambda: pf.runs.create_or_update(run=run))
            try:
                created = self._wait(f"submitting run {job.name}", submitting)
            except KeyboardInterrupt:
                # the request may already be on its way: let it return, then cancel what it created
                log.warning("%s: interrupted while submitting run %s; canceling it once submitted", job.label,
                            job.name)
                with contextlib.suppress(LlmopsError, KeyboardInterrupt):
                    self._wait(f"submitting run {job.name}", submitting)
                    self._call(f"canceling run {job.name}", lambda: pf.runs.cancel(job.name))
                    log.warning("%s: run %s canceled (interrupted)", job.label, job.name)
                raise
            except LlmopsError as exc:
                # create_or_update reads the run back after submitting it; when only that failed, carry on
                created = self._lookup(pf, job.name) if retryable(exc) else None
                if created is None:
                    raise
        flight = _Flight(job, progress_factory(job.label, self.ctx.project.data(job.data).rows),
                         started=self.clock())
        flight.portal = getattr(created, "_portal_url", None)
        flight.status = str(getattr(created, "status", None) or "NotStarted")
        log.info("%s: run %s submitted (%s); follow it at %s", job.label, job.name, flight.status,
                 flight.portal or "the workspace's prompt flow runs page")
        return flight

    def _lookup(self, pf: Any, name: str) -> Any:
        """The run if the service has it (None if not), riding out throttling and 5xx like a status check."""
        interval = self.polling.first_s
        for attempt in range(1, self.polling.transient_limit + 1):
            try:
                return self._call(f"looking up run {name}", lambda: pf.runs.get(name))
            except LlmopsError as exc:
                if not retryable(exc):
                    return None  # promptflow's RunNotFoundError: the submission did not reach the service
                if attempt == self.polling.transient_limit:
                    raise
                log.warning("looking up run %s failed (%d of %d tries): %s", name, attempt,
                            self.polling.transient_limit, exc)
                self.sleep(interval)
                interval = min(self.polling.max_s, interval * self.polling.factor)
        return None

    # -------------------------------------------------------------------------------------- awaiting

    def _await(self, pf: Any, flights: list[_Flight]) -> None:
        interval = self.polling.first_s
        deadline = self.clock() + self.polling.timeout_s
        while any(f.record is None for f in flights):
            self.sleep(interval)
            moved = False
            for flight in flights:
                if flight.record is None:
                    moved |= self._poll(pf, flight)
            if self.clock() > deadline:
                late = _running(flights)
                self._cancel(pf, late, "over the time limit")
                raise ServiceError(f"Azure ML: {', '.join(f.job.name for f in late)} still not finished after "
                                   f"{self.polling.timeout_s / 60:g} min and canceled; see "
                                   f"{late[0].portal or 'the workspace'}")
            # a new status starts the back-off again; progress alone does not (a long run's log keeps growing),
            # but the lines' pace caps the wait at when the first run should end
            interval = self.polling.first_s if moved else min(self.polling.max_s, interval * self.polling.factor)
            etas = [eta for f in flights if f.record is None and (eta := self._eta(f)) is not None]
            if etas:
                interval = min(interval, max(self.polling.first_s, min(etas)))

    def _eta(self, flight: _Flight) -> float | None:
        """Seconds until a running run's last line, at the pace of its lines so far."""
        total = flight.progress.total
        if flight.status != "Running" or not total or not 0 < flight.done < total:
            return None
        return (self.clock() - flight.running_since) * (total - flight.done) / flight.done

    def _poll(self, pf: Any, flight: _Flight) -> bool:
        """One status check (what ``pfazure run stream`` shows); True when the run's status changed."""
        name = flight.job.name
        try:
            run = self._call(f"status of run {name}", lambda: pf.runs.get(name))
            text = self._call(f"log of run {name}", lambda: pf.runs._get_log(flow_run_id=name))
        except LlmopsError as exc:
            flight.failures += 1
            if not retryable(exc) or flight.failures >= self.polling.transient_limit:
                raise
            log.warning("%s: status check failed (%d of %d tries): %s", flight.job.label, flight.failures,
                        self.polling.transient_limit, exc)
            return False
        flight.failures = 0
        changed = False
        text = text if isinstance(text, str) else ""
        for line in text[flight.log_seen:].splitlines():
            if line.strip():
                log.info("%s | %s", flight.job.label, line.rstrip())
        flight.log_seen = max(flight.log_seen, len(text))
        done = [int(m.group(1)) for m in _PROGRESS.finditer(text)]
        flight.done = done[-1] if done else flight.done
        flight.progress.update(flight.done)
        status = str(run.status)
        if status != flight.status:
            log.info("%s: %s -> %s", flight.job.label, flight.status, status)
            flight.status, changed = status, True
            flight.running_since = self.clock()
        if status in TERMINAL:
            flight.record = self._finish(pf, flight, run)
        return changed

    def _finish(self, pf: Any, flight: _Flight, run: Any) -> RunRecord:
        name = flight.job.name
        children = self._call(f"line details of run {name}",
                              lambda: pf.runs._get_flow_runs_pagination(name, max_results=10**7))
        lines = [line_result(child) for child in children or []]
        lines.sort(key=lambda line: line.line)
        metrics: dict[str, Any] = {}
        if run.status == "Completed":
            metrics = dict(self._call(f"metrics of run {name}", lambda: pf.runs.get_metrics(name)) or {})
        error = as_dict(as_dict(getattr(run, "_error", None)).get("error")).get("message")
        flight.progress.finish(len(lines))
        start, end = getattr(run, "_start_time", None), getattr(run, "_end_time", None)
        duration = (end - start).total_seconds() if start and end else self.clock() - flight.started
        record = RunRecord(flight.job.flow, name, run_status(run.status, "Azure ML"), lines, duration, metrics,
                           str(error) if error else None, evaluation=flight.job.evaluation)
        log.info("%s: run %s %s: %s", flight.job.label, name, run.status, flight.portal or "")
        return record

    def _cancel(self, pf: Any, flights: list[_Flight], why: str) -> None:
        for flight in flights:
            name = flight.job.name
            try:
                self._call(f"canceling run {name}", lambda: pf.runs.cancel(name))  # noqa: B023 (called at once)
                flight.status = "Canceled"
                log.warning("%s: run %s canceled (%s)", flight.job.label, flight.job.name, why)
            except (LlmopsError, KeyboardInterrupt) as exc:
                log.error("%s: could not cancel run %s (%s); cancel it in the studio: %s", flight.job.label,
                          flight.job.name, exc, flight.portal or "the workspace's prompt flow runs page")


def _start(fn: Callable[[], Any]) -> queue.Queue[tuple[bool, Any]]:
    """``fn`` running in a daemon thread; its (ok, result or exception) arrives in the returned queue."""
    box: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

    def target() -> None:
        try:
            box.put((True, fn()))
        except BaseException as exc:  # handed to the caller's thread
            box.put((False, exc))

    threading.Thread(target=target, daemon=True, name="llmops-azureml-call").start()
    return box


def _running(flights: list[_Flight]) -> list[_Flight]:
    return [f for f in flights if f.record is None and f.status not in TERMINAL]


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI job canceled) stops the wait like Ctrl-C does, so submitted runs get canceled."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
