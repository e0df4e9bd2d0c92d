"""``llmops-ci register``: each flow that asks to be registered (a ``register:`` block, or a ``deploy:`` block,
which needs a model) and whose gate passed becomes a model whose version follows its content."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from llmops_ci.config import FlowSpec
from llmops_ci.core.errors import CheckFailed, UsageError
from llmops_ci.diagnostics.findings import ERROR
from llmops_ci.lint.project import LintRequest, lint
from llmops_ci.platforms import build_tags
from llmops_ci.project.loaded import Project
from llmops_ci.releases.spec import model_spec
from llmops_ci.results.provenance import flow_hash
from llmops_ci.results.state import load_summary
from llmops_ci.results.store import update_flow_summary
from llmops_ci.results.summary import FlowResult, GateResult, RunResult
from llmops_ci.steps import Context, Step, release_for
from llmops_ci.steps.settings import Settings

log = logging.getLogger("llmops_ci.register")


def add_release_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="print exactly what would be created; change nothing")
    parser.add_argument("--registry", type=Path, metavar="PATH",
                        help="local backend: the model registry folder (default: <state-dir>/registry)")


class RegisterStep(Step):
    name = "register"
    help = "register each flow whose gate passed as a model versioned by its content"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_release_options(parser)
        parser.add_argument("--force", action="store_true",
                            help="register even without a passed gate, or with lint errors in the flow")

    def run(self, settings: Settings, ctx: Context) -> int:
        project = ctx.project(settings.config)
        summary = load_summary(ctx.state_dir)
        release = release_for(settings, ctx, project)
        config = project.config
        refused: list[str] = []  # content the gate did not judge
        unlinted: list[str] = []  # lint errors
        for flow in config.select(settings.flows):
            if flow.register is None and flow.deploy is None:
                why = (f"{flow.name}: not registered: it has no 'register:' block in {config.doc.display} (flows "
                       "without one are never registered; add 'register: {name: <model name>}' to register it)")
                if settings.flow:
                    raise UsageError(why)
                log.info("%s", why)
                continue
            entry = summary.flows.get(flow.name) or FlowResult()
            gate = entry.gate
            if (gate.passed if gate else None) is not True and not settings.force:
                log.warning("%s: not registered: %s (or pass --force)", flow.name,
                            "its gate failed" if gate else "no gate result; run 'llmops-ci gate' first")
                continue
            lint_error = None if settings.force else lint_refusal(project, flow)
            if lint_error is not None:
                log.error("%s", lint_error)
                unlinted.append(flow.name)
                continue
            content = flow_hash(flow, project.info(flow.path))
            refusal = unjudged(entry, content)
            if refusal and not settings.force:
                log.error("%s: not registered: %s; run batch-run, eval-run and gate again on this content (or pass "
                          "--force)", flow.name, refusal)
                if not settings.dry_run:
                    update_flow_summary(ctx.state_dir, flow.name, "register", {"refused": refusal})
                refused.append(flow.name)
                continue
            spec = model_spec(project, flow, summary, build_tags(ctx.environ))
            if settings.dry_run:
                ctx.stdout.write(release.dry_run_model(spec))
                continue
            name, version, created = release.register(spec)
            log.info("%s: %s %s:%s%s", flow.name, "registered" if created else "already registered", name, version,
                     "" if version == spec.version else f" (content_hash {spec.version})")  # a registry's own number
            update_flow_summary(ctx.state_dir, flow.name, "register",
                                {"name": name, "version": version, "created": created, "backend": settings.backend,
                                 "run": entry.run.name if entry.run else None, "flow_hash": content,
                                 "gate": "passed" if gate is not None and gate.passed is True else "forced",
                                 **({"forced": refusal} if refusal else {})})
        reasons = ([f"not registered: {', '.join(refused)}: the content differs from what the gate judged (see above)"]
                   if refused else [])
        if unlinted:
            reasons.append(f"not registered because lint found errors: {', '.join(unlinted)}; fix them (see "
                           "'llmops-ci lint') or pass --force")
        if reasons:
            raise CheckFailed("; ".join(reasons))
        return 0


def lint_refusal(project: Project, flow: FlowSpec) -> str | None:
    """Why a flow must not be registered as it is: its lint errors (an agent using a resource it does not declare
    would be granted no credentials when served), or None."""
    errors = [f for f in lint(LintRequest(flows=(flow.name,)), project).findings if f.severity == ERROR]
    if not errors:
        return None
    first = errors[0]
    where = f"{first.path}:{first.line}" if first.line else first.path
    return (f"{flow.name}: not registered: lint found {len(errors)} error{'s' if len(errors) != 1 else ''}, the "
            f"first at {where}: {first.message} ({first.rule}); fix it, or pass --force")


def unjudged(entry: FlowResult, content: str) -> str | None:
    """Why the flow's content now is not what its gate judged (None: it is). The gate's record of the run it read
    comes first; an older summary without it falls back to the batch run's."""
    gate, run = entry.gate or GateResult(None), entry.run or RunResult()
    judged = gate.flow_hash or run.flow_hash
    name = gate.run or run.name
    if not judged:
        return "no content hash of the run its gate judged (a state dir from an older llmops-ci)"
    if judged != content:
        return f"its content changed since the run the gate judged ({name}: flow_hash {judged}, now {content})"
    return None


STEP = RegisterStep()
