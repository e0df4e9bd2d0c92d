"""Runs of MLflow agents on this machine: each in a child process (``mlflow_runner``) over a private copy.

MLflow keeps everything under ``<state>/mlflow``: the sqlite tracking store and registry
(``mlflow.db``) and the artifacts. The agent's LLM calls reach the endpoints named in the
environment (``OPENAI_BASE_URL``, ``DATABRICKS_HOST``); with an LLM cache they go through the
record/replay proxy instead, which stands in for both.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_ci.config import Config
from llmops_ci.core.child_env import child_environment
from llmops_ci.core.errors import CheckFailed, UsageError
from llmops_ci.core.log import cache_line
from llmops_ci.core.progress import Progress
from llmops_ci.core.safe_copy import copy_tree
from llmops_ci.engines.artifacts import LineResult
from llmops_ci.engines.base import Backend
from llmops_ci.engines.plumbing import ENDPOINT_ROUTES, REPLAY_KEYS, count_lines, run_child, take_result
from llmops_ci.kinds.mlflow.kind import MLMODEL_SKIP
from llmops_ci.kinds.mlflow.spec import MlflowAgentSpec
from llmops_ci.llm.cache import LlmProxy
from llmops_ci.llm.cassette import CacheSettings
from llmops_ci.results.records import RunJob, RunRecord, TestJob, TestRecord, line_status

if TYPE_CHECKING:
    from llmops_ci.engines.base import BackendContext

log = logging.getLogger("llmops_ci.mlflow")
LOAD_ERRORS = ("MlflowException", "ImportError", "ModuleNotFoundError", "SyntaxError", "FileNotFoundError")


def mlflow_root(state_dir: Path) -> Path:
    return state_dir.absolute() / "mlflow"


def tracking_uri(state_dir: Path) -> str:
    return f"sqlite:///{mlflow_root(state_dir) / 'mlflow.db'}"


def mlflow_environment(state_dir: Path, environ: Mapping[str, str], extra: Mapping[str, str] | None = None
                       ) -> dict[str, str]:
    uri = tracking_uri(state_dir)
    # the scoring server starts `uvicorn` by name: our interpreter's scripts must come first on PATH
    scripts = str(Path(sys.executable).parent)
    path = environ.get("PATH", "")
    env = {**environ, "PATH": path if path.split(os.pathsep)[0] == scripts else os.pathsep.join([scripts, path]),
           "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "DO_NOT_TRACK": "true", "MLFLOW_MODEL_CATALOG_URI": "", "PYTHONUNBUFFERED": "1",
           "GIT_PYTHON_REFRESH": "quiet"}
    return child_environment(env, extra)  # the agent's code runs here: no CI credential


class MlflowChild:
    """Starts ``python -m llmops_ci.engines.mlflow.runner`` with one request and returns its result."""

    def __init__(self, state_dir: Path, environ: Mapping[str, str]) -> None:
        self.state_dir, self.environ = state_dir.absolute(), dict(environ)
        self.root = mlflow_root(self.state_dir)

    def call(self, action: str, request: dict[str, Any], *, name: str, extra_env: Mapping[str, str] | None = None,
             tick: Callable[[], None] | None = None) -> dict[str, Any]:
        for sub in ("artifacts", "results", "work"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        result = self.root / "results" / f"{name}.json"
        result.unlink(missing_ok=True)
        request = {"artifacts": str(self.root / "artifacts"), **request, "action": action, "result": str(result)}
        exited = run_child("llmops_ci.engines.mlflow.runner", request, cwd=self.root,
                           env=mlflow_environment(self.state_dir, self.environ, extra_env),
                           log_path=self.state_dir / "logs" / f"mlflow-{name}.log", watch=tick)
        outcome = take_result(result)
        if outcome is None:
            raise exited.no_result("MLflow")
        if outcome.get("traceback"):
            log.debug("%s", outcome["traceback"])
        return outcome


@contextlib.contextmanager
def llm_routes(cache: CacheSettings | None, environ: Mapping[str, str]) -> Iterator[tuple[dict[str, str], Any]]:
    """Environment overrides that send the agent's LLM calls through the record/replay proxy (none without one)."""
    if cache is None:
        yield {}, None
        return
    upstreams: dict[str, str | None] = {route: environ.get(var) or None for var, route in ENDPOINT_ROUTES.items()}
    with LlmProxy(cache, upstreams) as proxy:
        env = {var: proxy.url_for(route) for var, route in ENDPOINT_ROUTES.items()}
        env.update({k: v for k, v in REPLAY_KEYS.items() if not environ.get(k)})  # clients insist on a key
        yield env, proxy
    if said := cache_line(cache.mode, proxy.stats, cache.cassette):
        log.info("%s", said)


def snapshot(spec: MlflowAgentSpec, folder: Path, dest: Path) -> Path:
    """A private copy of the agent's folder (runs must not write into the repository); returns the code file."""
    shutil.rmtree(dest, ignore_errors=True)
    copy_tree(folder, dest, ignore=shutil.ignore_patterns(*MLMODEL_SKIP, "*.pyc"))
    try:
        return dest / spec.code.relative_to(folder)
    except ValueError:
        raise UsageError(f"mlflow_agent.code {spec.code} is outside the flow's folder {folder}; put the agent's "
                         "code below its 'path:'") from None


def model_config_path(code: Path) -> str | None:
    for name in ("config.yml", "config.yaml", "agent_config.yml", "agent_config.yaml"):
        if (code.parent / name).is_file():
            return str(code.parent / name)
    return None


class MlflowAgentRunner(Backend):
    """Runs of ``kind == "mlflow_agent"`` jobs; ``specs`` maps flow name -> spec."""

    name = "local"

    def __init__(self, state_dir: Path, specs: Mapping[str, MlflowAgentSpec], folders: Mapping[str, Path],
                 environ: Mapping[str, str] | None = None) -> None:
        self.state_dir = state_dir.absolute()
        self.specs, self.folders = dict(specs), dict(folders)
        self.environ = dict(os.environ if environ is None else environ)
        self.child = MlflowChild(self.state_dir, self.environ)

    @classmethod
    def for_config(cls, state_dir: Path, config: Config, environ: Mapping[str, str]) -> MlflowAgentRunner:
        specs = {n: spec for n, f in config.flows.items() if (spec := f.block(MlflowAgentSpec)) is not None}
        return cls(state_dir, specs, {n: config.flows[n].path for n in specs}, environ)

    def _spec(self, flow: str, path: Path) -> tuple[MlflowAgentSpec, Path]:
        if flow in self.specs:
            return self.specs[flow], self.folders[flow]
        for name, folder in self.folders.items():
            if folder == path:
                return self.specs[name], folder
        raise UsageError(f"{path}: not an MLflow agent declared in llmops.yaml (no mlflow_agent: block)")

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        spec, folder = self._spec(job.flow, job.path)
        work = self.child.root / "work" / job.name
        code = snapshot(spec, folder, work)
        lines_file = work.parent / f"{job.name}.lines.jsonl"
        lines_file.unlink(missing_ok=True)
        request = {"code": str(code), "interface": spec.interface, "data": str(job.data.absolute()),
                   "workers": job.options.workers, "line_timeout": job.options.line_timeout, "lines": str(lines_file),
                   "column_mapping": job.column_mapping,
                   "model_config": model_config_path(code)}

        def tick() -> None:
            progress.update(count_lines(lines_file))

        started = time.monotonic()
        try:
            with llm_routes(job.cache, self.environ) as (routes, proxy):
                outcome = self.child.call("batch", request, name=job.name,
                                          extra_env={**job.environment_variables, **routes}, tick=tick)
            stats = proxy.stats.to_json() if proxy is not None else None
        finally:
            shutil.rmtree(work, ignore_errors=True)
            lines_file.unlink(missing_ok=True)
        duration = time.monotonic() - started
        if outcome.get("status") != "Completed":
            raise _failure(job.label, outcome)
        lines = [line_result(r) for r in outcome["lines"]]
        progress.finish(len(lines))
        return RunRecord(job.flow, job.name, "Completed", lines, duration, {}, None, stats, evaluation=job.evaluation)

    def test(self, job: TestJob) -> TestRecord:
        spec, folder = self._spec("", job.path)
        name = f"test_{os.getpid()}_{time.time_ns()}"
        work = self.child.root / "work" / name
        code = snapshot(spec, folder, work)
        data = work.parent / f"{name}.jsonl"
        data.write_text(json.dumps(job.inputs) + "\n", encoding="utf-8")
        lines_file = work.parent / f"{name}.lines.jsonl"
        request = {"code": str(code), "interface": spec.interface, "data": str(data), "workers": 1,
                   "lines": str(lines_file), "model_config": model_config_path(code)}
        started = time.monotonic()
        try:
            with llm_routes(job.cache, self.environ) as (routes, _):
                outcome = self.child.call("batch", request, name=name,
                                          extra_env={**job.environment_variables, **routes})
        finally:
            shutil.rmtree(work, ignore_errors=True)
            data.unlink(missing_ok=True)
            lines_file.unlink(missing_ok=True)
        if outcome.get("status") != "Completed":
            raise _failure(str(job.path), outcome)
        line = outcome["lines"][0]
        return TestRecord(line_status(line["status"], "MLflow"), line["outputs"], line["error"], [],
                          time.monotonic() - started)


def line_result(record: dict[str, Any]) -> LineResult:
    return LineResult(line=int(record["line"]), status=line_status(record["status"], "MLflow"), inputs=record["inputs"],
                      outputs=record["outputs"], duration_s=record.get("duration_s"), tokens=record.get("tokens") or {},
                      error=record.get("error"), error_code=record.get("error_code"), node=None)


def _failure(label: str, outcome: dict[str, Any]) -> Exception:
    message = f"{label}: MLflow could not load or run the agent: {outcome.get('error')}"
    if outcome.get("error_code") in LOAD_ERRORS:
        return UsageError(message + "; run it with 'python <code file>' to see the full error")
    return CheckFailed(message)


def data_example(path: Path | None, interface: str) -> dict[str, Any] | None:
    """The first data line as the request logging predicts on (so a cassette recorded by batch-run covers it)."""
    from llmops_ci.engines.mlflow.runner import as_request

    if path is None or not path.is_file():
        return None
    with path.open(encoding="utf-8") as fh:
        for raw in fh:
            if raw.strip():
                line = json.loads(raw)
                return as_request(line, interface) if isinstance(line, dict) else None
    return None


def from_context(ctx: BackendContext) -> MlflowAgentRunner:
    """The factory for ``BACKENDS`` (runs of ``mlflow_agent`` flows)."""
    return MlflowAgentRunner.for_config(ctx.state_dir, ctx.project.config, ctx.environ)
