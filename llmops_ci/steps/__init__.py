"""One module per CLI step; each turns parsed arguments into typed requests for the library."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from llmops_ci.config import DEFAULT_CONFIG, Config, FlowSpec, Origin, read_config
from llmops_ci.errors import ConfigError, LlmopsError, UsageError
from llmops_ci.execute import RunContext
from llmops_ci.http import Http
from llmops_ci.llm_cache import MODES
from llmops_ci.log import register_secret
from llmops_ci.platforms import Platform
from llmops_ci.progress import Progress
from llmops_ci.runs import RunOptions, mark_unchanged, preflight, resolve_values

log = logging.getLogger("llmops_ci.steps")


@dataclass(frozen=True)
class Context:
    """What ``main`` builds once and hands to a step: the outside world, nothing parsed from argv."""

    platform: Platform
    environ: Mapping[str, str]
    stdout: TextIO
    stderr: TextIO
    state_dir: Path
    http: Http


class Step(Protocol):
    name: str
    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, ctx: Context) -> int: ...


def load_project(config: Path | None) -> Config:
    """llmops.yaml for a step that runs flows: every problem is exit 2; ``${env:...}`` is resolved per run."""
    path = config or Path(DEFAULT_CONFIG)
    if not path.is_file():
        raise UsageError(f"{path}: config file not found; pass --config PATH")
    loaded, problems = read_config(path, environ=None)
    if problems or loaded is None:
        raise ConfigError(problems)
    return loaded


def run_context(backend: str, ctx: Context) -> RunContext:
    from llmops_ci.backends import BACKENDS

    if backend not in BACKENDS:
        raise UsageError(f"--backend {backend} is not available in this version; use --backend local")
    live = ctx.stderr.isatty() and ctx.platform.name == "local"

    def on_secret(value: str) -> None:
        register_secret(value)
        ctx.platform.mask(value, ctx.stdout)

    return RunContext(backend=BACKENDS[backend](ctx.state_dir), state_dir=ctx.state_dir, environ=ctx.environ,
                      progress=lambda label, total: Progress(label, total, ctx.stderr, live=live),
                      on_secret=on_secret)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=_positive, default=4, metavar="N",
                        help="lines run in parallel (default: 4)")
    parser.add_argument("--line-timeout", type=_positive, default=300, metavar="S",
                        help="seconds one line may take before it fails (default: 300)")
    parser.add_argument("--changed-since", metavar="REF",
                        help="run only the flows whose files, data, evaluations or config entry changed since the "
                             "merge base with REF (e.g. origin/main); the others are reported as unchanged")
    parser.add_argument("--baseline", type=Path, metavar="PATH",
                        help="with --changed-since: the target branch's state dir, whose results are carried over "
                             "for the flows that are not run")
    parser.add_argument("--llm-cache", choices=MODES, metavar="MODE",
                        help="record/replay LLM calls: off, record, replay or auto (default: llmops.yaml's "
                             "llm_cache.mode, else off)")


def select_for_run(config: Config, args: argparse.Namespace, ctx: Context) -> list[FlowSpec]:
    """The flows to run: ``--flow`` (default all), narrowed by ``--changed-since`` to those a change touches."""
    flows = config.select(args.flow)
    if not args.changed_since:
        return flows
    from llmops_ci.changes import changed_files, select_flows

    selection = select_flows(config, changed_files(args.changed_since))
    if selection.all_reason:
        log.info("all flows selected: %s", selection.all_reason)
    for flow in flows:
        if flow.name in selection.selected:
            log.info("%s: changed (%s)", flow.name, "; ".join(selection.reasons.get(flow.name, [])[:3]))
        else:
            carried = mark_unchanged(ctx.state_dir, flow.name, args.changed_since, selection.all_reason,
                                     args.baseline if args.baseline and args.baseline.is_dir() else None)
            log.info("%s: unchanged since %s, not run%s", flow.name, args.changed_since,
                     "; baseline results carried over" if carried else "")
    return [f for f in flows if f.name in selection.selected]


def run_options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(args.workers, args.line_timeout, args.llm_cache)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


class RunStep:
    """A step that runs flows on a backend: batch-run and eval-run differ only in the library call."""

    def __init__(self, name: str, help: str,
                 action: Callable[[Config, list[FlowSpec], RunOptions, RunContext], object]) -> None:
        self.name, self.help, self.action = name, help, action

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_run_options(parser)

    def run(self, args: argparse.Namespace, ctx: Context) -> int:
        config = load_project(args.config)
        flows = select_for_run(config, args, ctx)
        if not flows:
            return 0
        preflight(config, flows)
        self.action(config, flows, run_options(args), run_context(args.backend, ctx))
        return 0


def release_for(args: argparse.Namespace, ctx: Context, config: Config) -> Any:
    """The registry and endpoints of ``--backend``: a local file registry, or an Azure ML workspace."""
    if args.backend == "local":
        from llmops_ci.backends.local_release import LocalRelease

        return LocalRelease(ctx.state_dir, args.registry or ctx.state_dir / "registry", dict(ctx.environ))
    if args.backend != "azureml":
        raise UsageError(f"--backend {args.backend} cannot register or deploy")
    if config.azureml is None:
        raise UsageError(f"{config.doc.display}: --backend azureml needs an 'azureml:' block (subscription_id, "
                         "resource_group, workspace)")
    from llmops_ci.backends.azureml import AzureMLRelease, WorkspaceScope, connect

    values = resolve_values(Origin(config.doc, ("azureml",)), {
        "subscription_id": config.azureml.subscription_id, "resource_group": config.azureml.resource_group,
        "workspace": config.azureml.workspace}, ctx.environ)
    return AzureRelease(AzureMLRelease(connect(WorkspaceScope(**values))))


class AzureRelease:
    """Azure ML behind the same calls as the local release: declared resources are checked before deploying."""

    def __init__(self, release: Any) -> None:
        self.release = release

    def register(self, spec: Any) -> tuple[str, str, bool]:
        return self.release.register(spec)

    def deploy(self, plan: Any, connections: Any, keep: bool) -> Any:
        self.release.check_resources(plan.model, environment_variables=plan.environment_variables)
        return self.release.deploy(plan, plan.model.version)


def run_step(step: Step, args: argparse.Namespace, ctx: Context) -> int:
    """Run one step; an expected failure is logged and becomes its exit code (unexpected ones propagate)."""
    try:
        return step.run(args, ctx)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        return exc.return_code
    except LlmopsError as exc:
        log.error("%s", exc)
        return exc.return_code
