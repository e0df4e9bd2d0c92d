"""Progress of a long run: a live bar on a terminal, a log line every few seconds in CI."""

from __future__ import annotations

import logging
import time
from typing import TextIO

log = logging.getLogger("llmops_ci.progress")


class Progress:
    def __init__(self, label: str, total: int, stream: TextIO, *, live: bool, interval: float = 5.0) -> None:
        self.label, self.total, self.stream, self.live, self.interval = label, total, stream, live, interval
        self.start = time.monotonic()
        self.last_report = self.start
        self.done = -1

    def update(self, done: int) -> None:
        now = time.monotonic()
        elapsed = now - self.start
        if self.live:
            if done != self.done or now - self.last_report >= 1:
                width = 30
                filled = int(width * done / self.total) if self.total else width
                self.stream.write(f"\r{self.label}: [{'#' * filled}{'.' * (width - filled)}] "
                                  f"{done}/{self.total} lines {elapsed:5.1f}s")
                self.stream.flush()
                self.last_report = now
        elif now - self.last_report >= self.interval:
            log.info("%s: %d/%d lines, %.0f s", self.label, done, self.total, elapsed)
            self.last_report = now
        self.done = done

    def finish(self, done: int) -> None:
        self.update(done)
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
