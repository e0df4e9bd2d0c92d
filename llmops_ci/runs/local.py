"""``--backend local`` for runs: each flow goes to the engine its kind (or the engine it declares) needs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from llmops_ci import engines
from llmops_ci.engines.base import PROMPT_FLOW, Backend, BackendContext
from llmops_ci.engines.promptflow import early

if TYPE_CHECKING:
    from llmops_ci.core.progress import Progress
    from llmops_ci.kinds.base import FlowInfo
    from llmops_ci.results.records import RunJob, RunRecord, TestJob, TestRecord


class RunsByEngine(Backend):
    """One ``--backend`` for runs whose flows go to the executor their kind (or engine) needs: prompt flow's for
    DAG, flex and prompt flow prompty files, MLflow's for agents, the prompty package for prompty 2.x files."""

    parallel_runs = True  # flows side by side; each engine shares --workers among its own runs

    def __init__(self, name: str, ctx: BackendContext, default: Callable[[BackendContext], Backend],
                 engines: dict[str, Callable[[BackendContext], Backend]]) -> None:
        self.name, self.ctx, self.default, self.factories = name, ctx, default, engines
        self.engines = frozenset({*engines, PROMPT_FLOW})
        self._built: dict[str, Backend] = {}
        self._lock = threading.Lock()

    def for_info(self, info: FlowInfo) -> Backend:
        # the engine a kind declares for this file decides alone (a prompty file in prompt flow's format declares
        # "promptflow", which is the default); only without one does the kind pick
        wanted = info.engine or info.kind
        key = wanted if wanted in self.factories else ""
        with self._lock:  # runs start from several threads at once
            if key not in self._built:
                self._built[key] = (self.factories[key] if key else self.default)(self.ctx)
            return self._built[key]

    def endpoint_down(self, run_name: str) -> str | None:
        for backend in list(self._built.values()):
            reason = backend.endpoint_down(run_name)
            if reason:
                return str(reason)
        return None

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        return self.for_info(job.info).run(job, progress)

    def test(self, job: TestJob) -> TestRecord:
        return self.for_info(job.info).test(job)

    def prestart(self, infos: list[FlowInfo], workers: int) -> None:
        """Let the default engine (prompt flow's) start its executor ahead when it will run one of ``infos``. Other
        engines are built when their first run needs them (building one may import its library)."""
        mine = [info for info in infos if (info.engine or info.kind) not in self.factories]
        if mine:
            self.for_info(mine[0]).prestart(mine, workers)
        else:  # nothing runs on prompt flow: the executor ``python -m llmops_ci`` may have started ahead goes
            early.discard()

    def close(self) -> None:
        with self._lock:
            built = list(self._built.values())
            self._built.clear()
        for backend in built:
            backend.close()


def from_context(ctx: BackendContext) -> Backend:
    return RunsByEngine("local", ctx, engines.DEFAULT, engines.ENGINES)
