"""One module per CLI step; each turns parsed arguments into typed requests for the library."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

from llmops_ci.platforms import Platform


@dataclass(frozen=True)
class Context:
    """What ``main`` builds once and hands to a step: the outside world, nothing parsed from argv."""

    platform: Platform
    environ: Mapping[str, str]
    stdout: TextIO
    state_dir: Path


class Step(Protocol):
    name: str
    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, ctx: Context) -> int: ...
