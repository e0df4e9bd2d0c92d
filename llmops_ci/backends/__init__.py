"""Where flows run: the ``Backend`` protocol and its registry (local today; Azure ML later)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from llmops_ci.progress import Progress
    from llmops_ci.runs import RunJob, RunRecord, TestJob, TestRecord


class Backend(Protocol):
    name: str

    def run(self, job: RunJob, progress: Progress) -> RunRecord:
        """One batch run (a flow over its data, or an evaluation over a base run)."""
        ...

    def test(self, job: TestJob) -> TestRecord:
        """One input through one flow."""
        ...


def _local(state_dir: Path) -> Backend:
    from llmops_ci.backends.local import LocalBackend

    return LocalBackend(state_dir)


BACKENDS: dict[str, Callable[[Path], Backend]] = {"local": _local}
