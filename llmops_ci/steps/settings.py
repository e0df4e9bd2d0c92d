"""What the command line asked for, as one typed value: ``cli.py`` builds it from argparse's result, steps read it.

One value for every step: an option a step does not take keeps its default here, as argparse would leave it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Settings:
    step: str = ""
    # common options (before or after the step)
    config: Path | None = None
    state_dir: Path | None = None
    flow: tuple[str, ...] | None = None
    backend: str = "local"
    platform: str = "auto"
    comment: Literal["auto", "off"] = "auto"
    pr: int | None = None
    verbose: bool = False
    # running flows (batch-run, eval-run, pr; test takes llm_cache)
    workers: int = 4
    line_timeout: int = 300
    changed_since: str | None = None
    baseline: Path | None = None
    llm_cache: Literal["off", "record", "replay", "auto"] | None = None  # overrides llmops.yaml's mode
    llm_cache_base_only: bool = False
    dry_run: bool = False
    # seconds the prompt flow executor waits, after this step, for the next step of the job (0: it ends with it)
    keep_executor_s: float = 0.0
    # lint
    paths: tuple[Path, ...] = ()
    format: str = "text"  # a name in lint.formats.FORMATS
    output: Path | None = None
    # test
    input: tuple[str, ...] = ()
    variant: str | None = None
    # register and deploy
    registry: Path | None = None
    force: bool = False
    keep: bool = False
    # init
    folder: Path = Path(".")
    # pr: the local report printed at its end shows the gate table, so its gate step need not print it too
    gate_table: bool = True

    @property
    def flows(self) -> list[str] | None:
        """The flows named with ``--flow`` (None: all)."""
        return list(self.flow) if self.flow is not None else None
