"""Logging and output for CI: secrets masked and untrusted text neutralised before anything reaches stdout or
stderr, whatever the formatter (each platform brings its own: ``Platform.formatter``)."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from llmops_ci.core import redaction
from llmops_ci.core.safe_text import log_safe

LOGGER = "llmops_ci"


class SecretFilter(logging.Filter):
    """Replaces every known secret in the final message (and its traceback) with ***."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redaction.redact(msg), None
        if record.exc_text:
            record.exc_text = redaction.redact(record.exc_text)
        return True


_SECRETS = SecretFilter()


def register_secret(value: str) -> None:
    redaction.add(value)


class SafeStream:
    """stdout/stderr as llmops-ci writes them: every byte redacted and neutralised, so no flow output, data
    value or model answer can be read as a CI command. ``command`` is the one way to emit a command on purpose
    (its untrusted parts escaped by the caller)."""

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw

    def write(self, text: str) -> int:
        self.raw.write(log_safe(redaction.redact(text)))
        return len(text)

    def command(self, text: str, *, secret: bool = False) -> None:
        self.raw.write(text if secret else redaction.redact(text))

    def flush(self) -> None:
        self.raw.flush()

    def isatty(self) -> bool:
        return self.raw.isatty()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, ... of the underlying stream
        return getattr(self.raw, name)


def command(out: TextIO, text: str, *, secret: bool = False) -> None:
    """Write a CI command line to ``out``, bypassing neutralisation (never for untrusted text unescaped).
    ``secret``: the line hands a secret to the runner's masking (add-mask, setsecret), so it is not redacted."""
    if isinstance(out, SafeStream):
        out.command(text, secret=secret)
    else:
        out.write(text if secret else redaction.redact(text))


def setup(formatter: logging.Formatter, stream: TextIO | None = None, verbose: bool = False) -> logging.Logger:
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_SECRETS)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    return logger


def cache_line(mode: str, stats: Any, cassette: object) -> str | None:
    """The one log line of a run's LLM cache, the same on every engine; None when the run called no LLM (an
    evaluation of plain Python), which would name a cassette that is never written."""
    hits, misses, recorded = int(stats.hits), int(stats.misses), int(stats.recorded)
    if not (hits or misses or recorded):
        return None
    return (f"LLM cache ({mode}): {hits} hits, {misses} misses, {recorded} recorded, "
            f"{int(getattr(stats, 'tokens_saved', 0))} tokens saved -> {cassette}")


def number(value: Any, digits: int = 4) -> str:
    """A number as every log line, table and comment shows it: metrics to 4 significant digits, seconds to 3;
    whole numbers whole (``-`` when there is none)."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{digits}g}"
