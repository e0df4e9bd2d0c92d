"""``llmops-ci deploy``: blue/green to the flow's endpoint, smoke tests, traffic steps, rollback on failure."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping

from llmops_ci.config import FlowSpec, Origin, connection_ref
from llmops_ci.core.errors import CheckFailed, UsageError
from llmops_ci.core.log import register_secret
from llmops_ci.platforms import build_tags
from llmops_ci.releases.base import check_engine
from llmops_ci.releases.spec import DeployPlan, load_smoke_tests, model_spec
from llmops_ci.results.records import environment, provider_connections, secret_values
from llmops_ci.results.state import load_summary
from llmops_ci.results.store import update_flow_summary
from llmops_ci.steps import Context, Step, release_for
from llmops_ci.steps.register import add_release_options
from llmops_ci.steps.settings import Settings

log = logging.getLogger("llmops_ci.deploy")


class DeployStep(Step):
    name = "deploy"
    help = "deploy each registered flow to its endpoint (blue/green, smoke tests, traffic steps, rollback)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_release_options(parser)
        parser.add_argument("--keep", action="store_true", help="local backend: keep the new deployment serving")

    def run(self, settings: Settings, ctx: Context) -> int:
        project = ctx.project(settings.config)
        config = project.config
        summary = load_summary(ctx.state_dir)
        flows = [f for f in config.select(settings.flows) if f.deploy is not None]
        if not flows:
            raise UsageError(f"{config.doc.display}: no selected flow has a 'deploy:' block")
        release = release_for(settings, ctx, project)
        check_engine(release, [(f, project.info(f.path)) for f in flows])
        failed = []
        for flow in flows:
            assert flow.deploy is not None
            spec = model_spec(project, flow, summary, build_tags(ctx.environ))
            env = deployment_environment(flow, ctx.environ, dry_run=settings.dry_run)
            plan = DeployPlan(spec, flow.deploy.endpoint, flow.deploy.instance_type, flow.deploy.instance_count,
                              flow.deploy.traffic, tuple(load_smoke_tests(config, flow)), env,
                              flow.deploy.request_timeout_ms, flow.deploy)
            if settings.dry_run:
                ctx.stdout.write(release.dry_run_plan(plan))
                continue
            names = {r.connection for r in spec.resources if r.connection} | {
                ref[0] for ref in map(connection_ref, env.values()) if ref is not None}
            missing = sorted(n for n in names if n not in config.connections)
            if missing:
                raise UsageError(f"{flow.name}: the flow calls connection(s) {', '.join(missing)} that "
                                 f"{config.doc.display} does not declare; the endpoint could not reach them")
            connections = provider_connections(config, names, ctx.environ)
            for secret in secret_values(connections):
                register_secret(secret)
            result = release.deploy(plan, connections, settings.keep)
            update_flow_summary(ctx.state_dir, flow.name, "deploy", {"model": f"{spec.name}:{spec.version}",
                                                                      **result.to_json()})
            if result.status != "deployed":
                log.error("%s: deployment to %s rolled back: %s", flow.name, result.deployment, result.message)
                failed.append(f"{flow.name} (" + (f"{result.previous} keeps serving" if result.previous else
                                                  "nothing was serving before, and nothing serves now") + ")")
            else:
                log.info("%s: %s:%s serves on %s (slot %s)", flow.name, spec.name, spec.version, plan.endpoint,
                         result.deployment)
        if failed:
            raise CheckFailed(f"deploy failed for {', '.join(failed)}; see the messages above")
        return 0


def deployment_environment(flow: FlowSpec, environ: Mapping[str, str], *, dry_run: bool) -> dict[str, str]:
    """What the deployment's process gets: the flow's run environment variables (llmops.yaml, run.yml), then the
    ``deploy:`` block's. ``${env:NAME}`` is resolved here; ``${connection.field}`` is left for prompt flow's
    serving to resolve from the connections the endpoint has, so no secret lands in the deployment's settings."""
    assert flow.deploy is not None
    if dry_run:  # shown as written: a dry run needs no secret and prints none
        return {str(k): str(v) for k, v in {**flow.environment_variables, **flow.deploy.environment_variables}.items()}
    run_env = environment(flow.where("environment_variables"), flow.environment_variables, environ)
    deploy_env = environment(Origin(flow.origin.doc, (*flow.origin.prefix, "deploy")),
                             flow.deploy.environment_variables, environ)
    return {**run_env, **deploy_env}


STEP = DeployStep()
