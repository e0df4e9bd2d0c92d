"""The run backend for ``evaluator:`` and ``scorer:`` evaluations: the library in a child process
(``evaluator_runner``), like MLflow agents, so no step but a run pays for importing it.

Lines are mapped as prompt flow maps a batch run over a base run (``${data.x}``, ``${run.outputs.x}``,
``${run.inputs.x}``, literals; lines whose base line failed are left out). An LLM-judged evaluator's model
configuration names a declared connection; its endpoint becomes the record/replay proxy's route for that
connection, so the judge's calls are recorded into, and replayed from, the evaluation's cassette.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from llmops_ci.core.errors import CheckFailed, UsageError
from llmops_ci.core.progress import Progress
from llmops_ci.engines.mapping import base_run, mapped_inputs, read_rows
from llmops_ci.engines.plumbing import (
    ENDPOINT_ROUTES,
    REPLAY_KEYS,
    LocalEngine,
    count_lines,
    rerouted,
    run_child,
    take_result,
    upstreams,
)
from llmops_ci.kinds.base import FlowInfo
from llmops_ci.llm.cache import ProxyServer
from llmops_ci.llm.cassette import CacheSettings
from llmops_ci.project.evaluators import model_connection
from llmops_ci.results.records import (
    LineResult,
    ProviderConnection,
    RunJob,
    RunRecord,
    TestJob,
    TestRecord,
    line_status,
)

if TYPE_CHECKING:
    from llmops_ci.engines.base import BackendContext

log = logging.getLogger("llmops_ci.evaluators")
LOAD_ERRORS = ("ImportError", "ModuleNotFoundError", "SyntaxError", "TypeError", "AttributeError",
               "EvaluationException", "ValueError")


def model_config(spec: dict[str, Any], conn: ProviderConnection) -> dict[str, Any]:
    """An ``init:`` model configuration ``{connection: <name>, azure_deployment|model: ...}`` as
    azure-ai-evaluation's ``AzureOpenAIModelConfiguration`` / ``OpenAIModelConfiguration`` (and MLflow judges'
    endpoint settings): the connection's endpoint and key, the rest as written."""
    rest = {k: v for k, v in spec.items() if k != "connection"}
    key = conn.values.get("api_key") or "llmops-ci-replay"  # the client insists on one; replay needs none
    if conn.type == "azure_open_ai":
        out = {"type": "azure_openai", "azure_endpoint": conn.values.get("api_base"), "api_key": key}
        if conn.values.get("api_version"):
            out["api_version"] = conn.values["api_version"]
        return {**out, **rest}
    if conn.type == "open_ai":
        return {"type": "openai", "base_url": conn.values.get("base_url"), "api_key": key, **rest}
    raise UsageError(f"connection '{conn.name}' is of type {conn.type}; a model configuration needs an open_ai or "
                     "azure_open_ai connection")


def resolved_init(init: dict[str, Any], connections: tuple[ProviderConnection, ...]) -> dict[str, Any]:
    found = model_connection(init)
    if found is None:
        return dict(init)
    key, name = found
    conn = next((c for c in connections if c.name == name), None)
    if conn is None:
        raise UsageError(f"init.{key}.connection '{name}' is not a connection declared in llmops.yaml")
    return {**init, key: model_config(init[key], conn)}


class EvaluatorRuns(LocalEngine):
    """Runs of jobs whose ``info.engine`` is ``evaluator``."""

    def lines(self, job: RunJob) -> list[tuple[int, dict[str, Any]]]:
        base = base_run(self.bases, job.base_run) if job.base_run else None
        # only what column_mapping gives: an evaluator's parameters have no data columns of their own
        mapping_only = FlowInfo(kind=job.info.kind, folder=job.info.folder, definition=job.info.definition)
        return mapped_inputs(mapping_only, job.column_mapping, read_rows(job.data), base, job.label)

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        todo = self.lines(job)
        spec = job.info.definition
        ref = job.evaluator or ""
        started = time.monotonic()
        settings = job.cache or CacheSettings("off", self.state_dir / "work" / f"{job.name}.cassette.json")
        with ProxyServer() as proxy:
            route = proxy.open_run(job.name, settings, {**upstreams(job.provider_connections), **self.env_upstreams()},
                                   max(1.0, job.options.line_timeout * 0.9))
            try:
                init = resolved_init(job.init, rerouted(job.provider_connections, route))
                # judges that read their endpoint from the environment (MLflow's openai:/ and databricks models)
                # reach it through the proxy too
                routes = {var: route.url_for(name) for var, name in ENDPOINT_ROUTES.items()}
                routes.update({k: v for k, v in REPLAY_KEYS.items() if not self.environ.get(k)})
                outcome = self.call(job, ref, init, todo, progress, routes)
            finally:
                route.close()
            self.ran(job, route, log)
        duration = time.monotonic() - started
        if outcome.get("status") != "Completed":
            message = f"{job.label}: the evaluator {ref} could not be loaded or run: {outcome.get('error')}"
            if outcome.get("error_code") in LOAD_ERRORS:
                raise UsageError(message + f" (evaluation defined in {spec})")
            raise CheckFailed(message)
        lines = [LineResult(line=int(r["line"]), status=line_status(r["status"], "the evaluator"), inputs=r["inputs"],
                            outputs=r["outputs"], duration_s=r.get("duration_s"), tokens=r.get("tokens") or {},
                            error=r.get("error"), error_code=r.get("error_code")) for r in outcome["lines"]]
        progress.finish(len(lines))
        return RunRecord(job.flow, job.name, "Completed", lines, duration, dict(outcome.get("metrics") or {}), None,
                         route.stats.to_json() if job.cache is not None else None, data_lines=len(todo),
                         evaluation=job.evaluation)

    def env_upstreams(self) -> dict[str, str | None]:
        """Where the endpoints a judge reads from the environment really are (None: replay only)."""
        out: dict[str, str | None] = {name: self.environ.get(var) or None for var, name in ENDPOINT_ROUTES.items()}
        if out["env-openai_base_url"] is None and self.environ.get("OPENAI_API_KEY"):
            out["env-openai_base_url"] = "https://api.openai.com/v1"  # the OpenAI client's own default
        return out

    def call(self, job: RunJob, ref: str, init: dict[str, Any], todo: list[tuple[int, dict[str, Any]]],
             progress: Progress, routes: dict[str, str]) -> dict[str, Any]:
        work = self.state_dir / "evaluators"
        work.mkdir(parents=True, exist_ok=True)
        result, progress_file = work / f"{job.name}.result.json", work / f"{job.name}.lines.jsonl"
        for path in (result, progress_file):
            path.unlink(missing_ok=True)
        request = {"ref": ref, "scorer": job.info.kind == "scorer", "roots": [str(job.info.folder)], "init": init,
                   "lines": todo,
                   "workers": job.options.workers, "line_timeout": job.options.line_timeout,
                   "name": job.evaluation or job.flow, "progress": str(progress_file), "result": str(result)}
        env = {**self.environ, **job.environment_variables, **routes,
               "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "MLFLOW_MODEL_CATALOG_URI": "",
               "PYTHONUNBUFFERED": "1", "GIT_PYTHON_REFRESH": "quiet", "PF_DISABLE_TRACING": "true",
               "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true"}  # azure-monitor's settings fetch: no traffic out
        try:
            exited = run_child("llmops_ci.engines.evaluators.runner", request, cwd=work, env=env,
                               log_path=self.state_dir / "logs" / f"evaluator-{job.name}.log",
                               watch=lambda: progress.update(count_lines(progress_file)))
            outcome = take_result(result)
            if outcome is None:
                raise exited.no_result("evaluator", f"{job.label}: ")
        finally:
            result.unlink(missing_ok=True)
            progress_file.unlink(missing_ok=True)
        if outcome.get("traceback"):
            log.debug("%s", outcome["traceback"])
        return outcome

    def test(self, job: TestJob) -> TestRecord:
        raise UsageError(f"{job.path}: an evaluator or scorer is not a flow; 'test' runs flows (score a run with "
                         "eval-run)")


def from_context(ctx: BackendContext) -> EvaluatorRuns:
    """The factory for engine ``evaluator`` of the local backend."""
    return EvaluatorRuns(ctx.state_dir, ctx.environ)
