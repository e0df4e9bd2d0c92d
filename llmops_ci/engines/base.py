"""What runs flows: the ``Backend`` base every engine and run target builds on (each capability declared here,
with its default), the ``BackendContext`` a factory receives (the loaded project, the state dir and the
environment), and ``check_engine``, the one place a target refuses flows whose engine it does not have. A factory
must not reach a service when it is built: ``--dry-run`` needs no credentials."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import llmops_ci.platforms  # noqa: F401  (registers the CI credential names every child environment is scrubbed of)
from llmops_ci.core.errors import ConfigError, Problem

if TYPE_CHECKING:
    from llmops_ci.core.progress import Progress
    from llmops_ci.kinds.base import FlowInfo
    from llmops_ci.project.loaded import Project
    from llmops_ci.results.records import RunJob, RunRecord, TestJob, TestRecord

PROMPT_FLOW = "promptflow"  # the engine of every kind that declares none (DAG, flex, prompt flow's prompty)


@dataclass(frozen=True)
class BackendContext:
    project: Project
    state_dir: Path
    environ: Mapping[str, str]
    registry: Path | None = None  # --registry: the local release's model registry folder
    keep_executor_s: float = 0.0  # Settings.keep_executor_s


class Backend:
    """A run target (``--backend``) or a local engine. Subclasses implement ``run`` and ``test`` and override the
    capabilities they have; the defaults are those of a target that runs one flow at a time on this machine."""

    name: str = ""
    # False when LLM calls cannot go through the local record/replay proxy (the flow runs somewhere else)
    routes_local_proxy: bool = True
    # run() may be called from several threads at once: flows run side by side, sharing --workers
    parallel_runs: bool = False
    # False: the target uses its own connections by name (a workspace's); llmops.yaml's are not resolved for it
    needs_local_connections: bool = True
    # True: batch-run and eval-run hand run_many all their jobs at once (remote runs submitted and awaited together)
    submits_together: bool = False
    # the engines whose flows this target runs (``engines.engine_of``); None: every engine
    engines: frozenset[str] | None = frozenset({PROMPT_FLOW})

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        """One batch run (a flow over its data, or an evaluation over a base run)."""
        raise NotImplementedError

    def test(self, job: TestJob) -> TestRecord:
        """One input through one flow."""
        raise NotImplementedError

    def run_many(self, jobs: list[RunJob], progress_factory: Callable[[str, int], Progress]) -> list[RunRecord]:
        """One record per job, in order (called only when ``submits_together``)."""
        return [self.run(job, progress_factory(job.label, 0)) for job in jobs]

    def dry_run(self, submissions: Sequence[Any]) -> str | None:
        """What ``--dry-run`` prints for the runs; None: the runs as ``run.yml`` documents."""
        return None

    def prestart(self, infos: list[FlowInfo], workers: int) -> None:
        """Start ahead what a run of one of ``infos`` will need (``pr`` does while it lints)."""

    def endpoint_down(self, run_name: str) -> str | None:
        """Why an LLM endpoint the run called was found down during it (None: it was not, or nobody looked)."""
        return None

    def close(self) -> None:
        """Stop what the backend started (processes, proxies, temporary homes); idempotent."""


@dataclass(frozen=True)
class EngineUse:
    """A flow (or evaluation) a target is asked to run, the engine it needs, and where it is declared."""

    label: str
    engine: str
    where: Callable[[str], Problem]  # the problem at the flow's ``path:``, with the message given


def check_engine(target: str, accepts: Collection[str] | None, uses: Iterable[EngineUse],
                 reasons: Mapping[str, str] | None = None) -> None:
    """Refuse, before anything is created, every use whose engine ``accepts`` lacks (None accepts all): one
    ``ConfigError`` with a problem per use, at its declaration. ``reasons`` gives the message by engine (``{label}``
    in it is the use's label); other engines get a message naming the engine and ``target``."""
    if accepts is None:
        return
    problems = []
    for use in uses:
        if use.engine in accepts:
            continue
        reason = (reasons or {}).get(use.engine) or (
            f"'{{label}}' runs on the {use.engine} engine, which {target} does not have; run it with --backend local")
        problems.append(use.where(reason.replace("{label}", use.label)))
    if problems:
        raise ConfigError(problems)
