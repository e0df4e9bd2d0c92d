"""What runs flows: the ``Backend`` protocol every engine and run target meets, and the ``BackendContext`` a
factory receives (the loaded project, the state dir and the environment). A factory must not reach a service
when it is built: ``--dry-run`` needs no credentials."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from llmops_ci.core.progress import Progress
    from llmops_ci.project.loaded import Project
    from llmops_ci.results.records import RunJob, RunRecord, TestJob, TestRecord


@dataclass(frozen=True)
class BackendContext:
    project: Project
    state_dir: Path
    environ: Mapping[str, str]
    registry: Path | None = None  # --registry: the local release's model registry folder


class Backend(Protocol):
    name: str
    # False when LLM calls cannot go through the local record/replay proxy (the flow runs somewhere else)
    routes_local_proxy: bool

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        """One batch run (a flow over its data, or an evaluation over a base run)."""
        ...

    def test(self, job: TestJob) -> TestRecord:
        """One input through one flow."""
        ...
