"""``llmops-ci test``: one input through one flow, like ``pf flow test``."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from llmops_ci.errors import CheckFailed, UsageError
from llmops_ci.execute import one_line
from llmops_ci.llm_cache import MODES
from llmops_ci.runs import (
    TestJob,
    cache_settings,
    environment,
    flow_info,
    preflight,
    provider_connections,
    secret_values,
    used_connections,
)
from llmops_ci.schema import closest
from llmops_ci.steps import Context, run_context

log = logging.getLogger("llmops_ci.test")


def parse_inputs(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; a value that parses as JSON is taken as JSON (numbers, lists, objects)."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--input {pair}: write --input NAME=VALUE")
        try:
            inputs[key] = json.loads(value)
        except ValueError:
            inputs[key] = value
    return inputs


class TestStep:
    name = "test"
    help = "run one input through one flow and print its outputs and node timings"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--input", action="append", default=[], metavar="NAME=VALUE",
                            help="a flow input (repeatable); JSON values are parsed; missing inputs use defaults")
        parser.add_argument("--variant", metavar="${NODE.VARIANT}", help="variant to use (default: the config's)")
        parser.add_argument("--llm-cache", choices=MODES, metavar="MODE",
                            help="record/replay LLM calls: off, record, replay or auto (default: llmops.yaml's)")

    def run(self, args: argparse.Namespace, ctx: Context) -> int:
        project = ctx.project(args.config)
        config = project.config
        if not args.flow or len(args.flow) != 1:
            raise UsageError("test needs exactly one --flow NAME; flows: " + ", ".join(config.flows))
        (flow,) = config.select(args.flow)
        preflight(project, [flow])
        rc = run_context(args.backend, ctx, project, args)
        cache = cache_settings(config, flow.name, args.llm_cache)
        info = flow_info(project, flow.path)
        inputs = parse_inputs(args.input)
        unknown = sorted(set(inputs) - set(info.inputs))
        if unknown:
            best = closest(unknown[0], info.inputs)
            raise UsageError(f"--input {unknown[0]}: flow '{flow.name}' has no input '{unknown[0]}'"
                             + (f"; did you mean '{best}'?" if best else "")
                             + f"; its inputs are: {', '.join(info.inputs) or 'none'}")
        lenient = cache is not None
        connections = provider_connections(config, used_connections(config, info, flow.connections,
                                                                    flow.environment_variables),
                                           ctx.environ, lenient=lenient)
        job = TestJob(flow.path, info, inputs, args.variant or flow.variant, flow.connections,
                      environment(flow.where("environment_variables"), flow.environment_variables, ctx.environ,
                                  connections, lenient=lenient), connections, cache)
        for secret in secret_values(job.provider_connections):
            rc.on_secret(secret)
        record = rc.backend.test(job)
        ctx.stdout.write(json.dumps(record.output, indent=2, ensure_ascii=False, default=str) + "\n")
        if record.nodes:
            from tabulate import tabulate

            rows = [(n["node"], n["status"], f"{n['duration_s']:.3f}" if n.get("duration_s") is not None else "-",
                     n.get("tokens") or "-") for n in record.nodes]
            ctx.stdout.write(tabulate(rows, headers=["node", "status", "seconds", "tokens"]) + "\n")
        if record.status != "Completed":
            raise CheckFailed(f"{flow.name}: the line failed: {one_line(record.error)}")
        log.info("%s: completed in %.2f s", flow.name, record.duration_s or 0)
        return 0


STEP = TestStep()
