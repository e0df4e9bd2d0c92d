"""One module per CLI step; each turns parsed arguments into typed requests for the library."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from llmops_ci.config import DEFAULT_CONFIG, FlowSpec
from llmops_ci.core import redaction
from llmops_ci.core.child_env import warn_if_held
from llmops_ci.core.errors import CheckFailed, ConfigError, LlmopsError, UsageError
from llmops_ci.core.extras import missing_extra
from llmops_ci.core.http import Http
from llmops_ci.core.log import register_secret
from llmops_ci.core.progress import Progress
from llmops_ci.engines.base import BackendContext
from llmops_ci.engines.promptflow import linger
from llmops_ci.execute import RunContext
from llmops_ci.lint.blocks import lint_blocks
from llmops_ci.llm.cassette import MODES
from llmops_ci.platforms import Platform
from llmops_ci.project.loaded import Project, load_project, secret_env_names
from llmops_ci.report.comment import current
from llmops_ci.results.provenance import config_id, flow_hash
from llmops_ci.results.records import RunOptions
from llmops_ci.results.state import disk_error, load_summary, record_step
from llmops_ci.results.store import mark_unchanged, update_flow_summary
from llmops_ci.results.summary import Summary
from llmops_ci.steps.settings import Settings

if TYPE_CHECKING:
    from llmops_ci.releases.base import Release

log = logging.getLogger("llmops_ci.steps")

# run backends kept for a whole CI job (``job_scope``): keyed by what a backend is built from, so that only steps of
# the same config, state dir and environment share one (and its warm executor)
_JOB_BACKENDS: list[dict[tuple[Any, ...], Any]] = []


@contextlib.contextmanager
def job_scope() -> Iterator[None]:
    """Steps run one after another in this process (``python -m llmops_ci.ci run``) share their run backends, and so
    one warm executor (prompt flow imported once for ``batch-run`` and ``eval-run``), as the steps of ``pr`` do. The
    backends are closed, their processes with them, when the scope ends, however it ends."""
    _JOB_BACKENDS.append({})
    try:
        yield
    finally:
        backends = list(_JOB_BACKENDS.pop().values())
        for backend in backends:
            backend.close()


@dataclass(frozen=True)
class Context:
    """What ``main`` builds once and hands to a step: the outside world, nothing parsed from argv."""

    platform: Platform
    environ: Mapping[str, str]
    stdout: TextIO
    stderr: TextIO
    state_dir: Path
    http: Http
    projects: dict[Path, Project] = field(default_factory=dict, compare=False)
    # run backends built by run_context, shared by every step of one run_step (``pr``: all of its steps)
    backends: dict[str, Any] = field(default_factory=dict, compare=False)
    backend_scopes: list[int] = field(default_factory=lambda: [0], compare=False)

    @contextlib.contextmanager
    def backend_scope(self) -> Iterator[None]:
        """Backends built inside live until the outermost scope ends, then are closed (their processes with them)."""
        self.backend_scopes[0] += 1
        try:
            yield
        finally:
            self.backend_scopes[0] -= 1
            if self.backend_scopes[0] == 0:
                backends = list(self.backends.values())
                self.backends.clear()
                for backend in backends:
                    backend.close()

    def project(self, config: Path | None) -> Project:
        """llmops.yaml loaded once per process, whichever steps (``pr`` runs several) ask for it."""
        path = (config or Path(DEFAULT_CONFIG)).absolute()
        if path not in self.projects:
            project = load_project(config)
            redaction.from_environment(self.environ, secret_env_names(project.config))
            self.projects[path] = project
        return self.projects[path]


class Step(Protocol):
    name: str
    help: str
    publishes: bool = False  # it publishes the results itself (or has none): main does not publish after it
    # a later step of the CI job may use the executor it ran flows in (batch-run, eval-run); every other step ends
    # one an earlier step kept
    keeps_executor: bool = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, settings: Settings, ctx: Context) -> int: ...

    def stateless(self, settings: Settings, ctx: Context) -> bool:
        """It leaves no state behind this time: nothing is noted in summary.json and nothing is published."""
        return False


def backend_context(project: Project, ctx: Context, settings: Settings) -> BackendContext:
    return BackendContext(project, ctx.state_dir, ctx.environ, settings.registry)


def run_context(backend: str, ctx: Context, project: Project, settings: Settings | None = None) -> RunContext:
    """The ``--backend`` that runs flows, with everything a run needs from outside."""
    from llmops_ci.runs import BACKENDS

    if backend not in BACKENDS:
        raise UsageError(f"--backend {backend} is not available to run flows (test, batch-run, eval-run); use "
                         f"one of: {', '.join(BACKENDS)}")
    live = ctx.stderr.isatty() and ctx.platform.name == "local"

    def on_secret(value: str) -> None:
        register_secret(value)
        ctx.platform.mask(value, ctx.stdout)

    chosen = ctx.backends.get(backend)
    job_key = (backend, project.config.path.absolute(), ctx.state_dir.absolute(), tuple(sorted(ctx.environ.items())))
    if chosen is None and _JOB_BACKENDS:
        chosen = _JOB_BACKENDS[-1].get(job_key)
    if chosen is None:
        chosen = BACKENDS[backend](BackendContext(project, ctx.state_dir, ctx.environ,
                                                  keep_executor_s=settings.keep_executor_s
                                                  if settings and not _JOB_BACKENDS else 0.0))
        if _JOB_BACKENDS:  # the job's scope closes it, not the step's
            _JOB_BACKENDS[-1][job_key] = chosen
        elif ctx.backend_scopes[0]:
            ctx.backends[backend] = chosen
    return RunContext(backend=chosen, state_dir=ctx.state_dir, environ=ctx.environ,
                      progress=lambda label, total: Progress(label, total, ctx.stderr, live=live),
                      on_secret=on_secret)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=positive_int, default=4, metavar="N",
                        help="lines in flight at once, over all the flows the step runs side by side (default: 4)")
    parser.add_argument("--line-timeout", type=positive_int, default=300, metavar="S",
                        help="seconds one line may take before it fails (default: 300)")
    parser.add_argument("--changed-since", metavar="REF",
                        help="run only the flows whose files, data, evaluations or config entry changed since the "
                             "merge base with REF (e.g. origin/main); the others are reported as unchanged")
    parser.add_argument("--baseline", type=Path, metavar="PATH",
                        help="the target branch's state dir (or its summary.json): the gate's max_drop/max_rise "
                             "rules compare with it, and with --changed-since its results are carried over for the "
                             "flows that are not run")
    parser.add_argument("--llm-cache", choices=MODES, metavar="MODE",
                        help="record/replay LLM calls: off, record, replay or auto (default: llmops.yaml's "
                             "llm_cache.mode, else off)")
    parser.add_argument("--llm-cache-base-only", action="store_true",
                        help="replay only cassette entries that exist unchanged on the base branch (--changed-since "
                             "REF, or the CI's target branch); answers this change recorded or altered are misses")


def select_for_run(project: Project, settings: Settings, ctx: Context) -> list[FlowSpec]:
    """The flows to run: ``--flow`` (default all), narrowed by ``--changed-since`` to those a change touches."""
    flows = project.config.select(settings.flows)
    if not settings.changed_since:
        return flows
    from llmops_ci.project.changes import changed_files, select_flows

    selection = select_flows(project, changed_files(settings.changed_since))
    if selection.all_reason:
        log.info("all flows selected: %s", selection.all_reason)
    for flow in flows:
        if flow.name in selection.selected:
            log.info("%s: changed (%s)", flow.name, "; ".join(selection.reasons.get(flow.name, [])[:3]))
        else:
            carried = mark_unchanged(ctx.state_dir, flow.name, settings.changed_since, selection.all_reason,
                                     settings.baseline if settings.baseline and settings.baseline.is_dir() else None)
            update_flow_summary(ctx.state_dir, flow.name, "config", config_id(project.config.path))
            log.info("%s: unchanged since %s, not run%s", flow.name, settings.changed_since,
                     "; baseline results carried over" if carried else "")
    return [f for f in flows if f.name in selection.selected]


def run_options(settings: Settings, ctx: Context | None = None, project: Project | None = None) -> RunOptions:
    base = None
    if ctx is not None and project is not None:
        from llmops_ci.llm.cassette_diff import resolve_base

        base = resolve_base(settings.changed_since, ctx.environ, project.config.root,
                            base_only=bool(settings.llm_cache_base_only))
    return RunOptions(settings.workers, settings.line_timeout, settings.llm_cache, base)


def positive_int(text: str) -> int:
    """argparse's type for a count or a number that starts at 1 (``--workers``, ``--line-timeout``, ``--pr``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


class RunStep(Step):
    """A step that runs flows on a backend: batch-run and eval-run differ only in the library call."""

    keeps_executor = True

    def __init__(self, name: str, help: str,
                 action: Callable[[Project, list[FlowSpec], RunOptions, RunContext], object], *,
                 evaluations: bool = False) -> None:
        self.name, self.help, self.action, self.evaluations = name, help, action, evaluations

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_run_options(parser)
        parser.add_argument("--dry-run", action="store_true",
                            help="print the run(s) that would be submitted, as run.yml documents; run nothing")

    def run(self, settings: Settings, ctx: Context) -> int:
        project = ctx.project(settings.config)
        flows = select_for_run(project, settings, ctx)
        if not flows:
            return 0
        blocked = lint_blocks(project, flows)
        runnable = [f for f in flows if f.name not in blocked]
        problems = list(dict.fromkeys(p for errors in blocked.values() for p in errors))
        if not runnable:  # nothing can run: bad input, exit 2, as before anything starts
            raise ConfigError(problems)
        if settings.dry_run:
            self.dry_run(project, runnable, settings, ctx)
            if blocked:
                raise ConfigError(problems)
            return 0
        warn_if_held(ctx.environ)
        if settings.step == self.name:  # a command of its own (not within pr): a later step may use its executor
            settings = replace(settings, keep_executor_s=linger.keep_seconds(ctx.environ,
                                                                             ctx.platform.ends_job_processes))
        try:
            self.action(project, runnable, run_options(settings, ctx, project),
                        run_context(settings.backend, ctx, project, settings))
        finally:
            if blocked:
                for problem in problems:
                    log.error("%s", problem)
                log.error("%s: not run: the lint errors above stop %s (and %s evaluations); the other flows ran",
                          ", ".join(blocked), "it" if len(blocked) == 1 else "them",
                          "its" if len(blocked) == 1 else "their")
        if blocked:
            raise CheckFailed(f"{self.name}: lint errors stopped {', '.join(blocked)}; fix them and run again")
        return 0

    def dry_run(self, project: Project, flows: list[FlowSpec], settings: Settings, ctx: Context) -> int:
        """The runs as run.yml documents; reaches no service and needs no credentials."""
        from llmops_ci.core.safe_text import log_safe
        from llmops_ci.runs.plan import dry_run_yaml, planned

        backend = run_context(settings.backend, ctx, project, settings).backend
        subs = planned(backend_context(project, ctx, settings), [f.name for f in flows], self.evaluations)
        text = backend.dry_run(subs) or dry_run_yaml(subs, backend.name)
        ctx.stdout.write(log_safe(text))
        return 0


def release_for(settings: Settings, ctx: Context, project: Project) -> Release:
    """The registry and endpoints of ``--backend``; built without reaching any service."""
    from llmops_ci.releases import RELEASES

    if settings.backend not in RELEASES:
        raise UsageError(f"--backend {settings.backend} cannot register or deploy; use one of: {', '.join(RELEASES)}")
    return RELEASES[settings.backend](backend_context(project, ctx, settings))


def run_step(step: Step, settings: Settings, ctx: Context) -> int:
    """Run one step; an expected failure is logged and becomes its exit code (unexpected ones propagate). A step
    that stops on bad input or a dead service is noted in summary.json, so no report is green after it."""
    try:
        with ctx.backend_scope():
            code = step.run(settings, ctx)
        _record(step, settings, ctx, code, None)
        return code
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        _record(step, settings, ctx, exc.return_code, str(exc.problems[0]) + more if exc.problems else str(exc))
        return exc.return_code
    except ModuleNotFoundError as exc:
        hint = missing_extra(exc)
        if hint is None:
            raise
        log.error("%s", hint)
        _record(step, settings, ctx, UsageError.return_code, hint)
        return UsageError.return_code
    except LlmopsError as exc:
        message = str(exc)
        hint = missing_extra(message)
        if hint is not None:
            message = f"{message}; {hint}"
        log.error("%s", message)
        _record(step, settings, ctx, exc.return_code, message)
        return exc.return_code
    except OSError as exc:  # a full or read-only disk is the machine's problem, not a bug in llmops-ci
        known = disk_error(exc)
        if known is None:
            raise
        log.error("%s", known)
        return known.return_code


# the steps whose results the report shows (comment adds none, pr's steps note their own ends, test keeps nothing)
RECORDED_STEPS = frozenset({"lint", "batch-run", "eval-run", "gate", "register", "deploy"})


def _record(step: Step, settings: Settings, ctx: Context, code: int, error: str | None) -> None:
    if step.name not in RECORDED_STEPS or step.stateless(settings, ctx):
        return
    try:
        record_step(ctx.state_dir, step.name, code, error)
    except (OSError, LlmopsError):  # the state dir itself may be what is wrong; the log says so already
        log.debug("could not note how %s ended", step.name, exc_info=True)


def report_config(settings: Settings) -> str | None:
    """The config whose results a report shows as current: --config, else llmops.yaml when there is one."""
    path = settings.config or Path(DEFAULT_CONFIG)
    return config_id(path) if path.is_file() else None


def current_summary(settings: Settings, ctx: Context) -> Summary:
    """summary.json as the report shows it: only the flows of this step's config are current, and a run of content
    that has changed since is marked stale."""
    summary = current(load_summary(ctx.state_dir), report_config(settings))
    if report_config(settings) is None or not summary.flows:
        return summary
    try:
        project = ctx.project(settings.config)
    except LlmopsError:  # a broken config is reported by the step; the report shows what is there
        return summary
    flows = dict(summary.flows)
    for name, entry in summary.flows.items():
        flow = project.config.flows.get(name)
        if entry.run is None or not entry.run.flow_hash or flow is None or entry.unchanged is not None:
            continue
        if flow_hash(flow, project.info(flow.path)) != entry.run.flow_hash:
            flows[name] = replace(entry, stale="the flow changed since this run")
    return replace(summary, flows=flows)
