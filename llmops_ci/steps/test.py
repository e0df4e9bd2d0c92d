"""``llmops-ci test``: one input through one flow, like ``pf flow test``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmops_ci.core.errors import CheckFailed, UsageError
from llmops_ci.core.schema import closest
from llmops_ci.execute import one_line
from llmops_ci.lint.project import preflight
from llmops_ci.llm.cassette import MODES, CacheSettings
from llmops_ci.results.records import (
    TestJob,
    cache_settings,
    environment,
    flow_info,
    provider_connections,
    secret_values,
    used_connections,
)
from llmops_ci.steps import Context, Step, run_context
from llmops_ci.steps.settings import Settings

log = logging.getLogger("llmops_ci.test")


def parse_inputs(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
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


@contextlib.contextmanager
def scratch_cassette(cache: CacheSettings | None, *, explicit: bool) -> Iterator[CacheSettings | None]:
    """``test`` replays what the flow's cassette holds but records new calls only when asked (``--llm-cache
    record``): under the config's ``auto`` mode it works on a copy that is thrown away, so trying one input never
    edits a committed cassette."""
    if cache is None or explicit or cache.mode != "auto":
        if cache is not None and cache.mode == "record":
            log.info("recording this line's LLM calls into %s", cache.cassette)
        yield cache
        return
    with tempfile.TemporaryDirectory(prefix="llmops-test-") as scratch:
        copy = Path(scratch) / cache.cassette.name
        if cache.cassette.is_file():
            shutil.copyfile(cache.cassette, copy)
        yield CacheSettings(cache.mode, copy)
        original = cache.cassette.read_bytes() if cache.cassette.is_file() else None
        if copy.is_file() and copy.read_bytes() != original:
            log.info("new LLM calls were not recorded (llm_cache auto); pass --llm-cache record to record them "
                     "into %s", cache.cassette)


class TestStep(Step):
    name = "test"
    help = "run one input through one flow and print its outputs and node timings"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--input", action="append", default=[], metavar="NAME=VALUE",
                            help="a flow input (repeatable); JSON values are parsed; missing inputs use defaults")
        parser.add_argument("--variant", metavar="${NODE.VARIANT}", help="variant to use (default: the config's)")
        parser.add_argument("--llm-cache", choices=MODES, metavar="MODE",
                            help="record/replay LLM calls: off, record, replay or auto (default: llmops.yaml's)")

    def run(self, settings: Settings, ctx: Context) -> int:
        project = ctx.project(settings.config)
        config = project.config
        if not settings.flow or len(settings.flow) != 1:
            raise UsageError("test needs exactly one --flow NAME; flows: " + ", ".join(config.flows))
        (flow,) = config.select(settings.flows)
        preflight(project, [flow])
        rc = run_context(settings.backend, ctx, project, settings)
        cache = cache_settings(config, flow.name, settings.llm_cache)
        info = flow_info(project, flow.path)
        inputs = parse_inputs(settings.input)
        unknown = sorted(set(inputs) - set(info.inputs))
        if unknown:
            best = closest(unknown[0], info.inputs)
            raise UsageError(f"--input {unknown[0]}: flow '{flow.name}' has no input '{unknown[0]}'"
                             + (f"; did you mean '{best}'?" if best else "")
                             + f"; its inputs are: {', '.join(info.inputs) or 'none'}")
        missing = [name for name, spec in info.inputs.items() if not spec.has_default and name not in inputs]
        if missing:
            raise UsageError(f"flow '{flow.name}' needs a value for each input without a default: "
                             + " ".join(f"--input {name}=..." for name in missing))
        lenient = cache is not None
        connections = provider_connections(config, used_connections(config, info, flow.connections,
                                                                    flow.environment_variables),
                                           ctx.environ, lenient=lenient)
        job = TestJob(flow.path, info, inputs, settings.variant or flow.variant, flow.connections,
                      environment(flow.where("environment_variables"), flow.environment_variables, ctx.environ,
                                  connections, lenient=lenient), connections, cache)
        for secret in secret_values(job.provider_connections):
            rc.on_secret(secret)
        with scratch_cassette(cache, explicit=settings.llm_cache is not None) as job_cache:
            record = rc.backend.test(dataclasses.replace(job, cache=job_cache))
        ctx.stdout.write(json.dumps(record.output, indent=2, ensure_ascii=False, default=str) + "\n")
        if record.nodes:
            from tabulate import tabulate

            per_node = any(n.get("tokens") for n in record.nodes)  # prompt flow counts them only with tracing on
            rows = [(n["node"], n["status"], f"{n['duration_s']:.3f}" if n.get("duration_s") is not None else "-",
                     *([n.get("tokens") or "-"] if per_node else [])) for n in record.nodes]
            headers = ["node", "status", "seconds", *(["tokens"] if per_node else [])]
            ctx.stdout.write(tabulate(rows, headers=headers) + "\n")
        if record.tokens and record.tokens.get("total"):
            ctx.stdout.write(f"tokens: {record.tokens['total']} (the line's LLM calls, as the proxy counted them)\n")
        if record.status != "Completed":
            raise CheckFailed(f"{flow.name}: the line failed: {one_line(record.error)}")
        log.info("%s: completed in %.2f s", flow.name, record.duration_s or 0)
        return 0


STEP = TestStep()
