"""Logging for CI: one formatter per platform, and secrets masked before anything is written."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from llmops_ci.safe_text import log_safe

LOGGER = "llmops_ci"


def escape_github(text: str) -> str:
    """Workflow-command data escaping (so a message cannot end the command or start another)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_azure(text: str) -> str:
    """Logging-command escaping for Azure Pipelines, and no line may start a new ##vso command."""
    return (text.replace("%", "%AZP25").replace("\r", "%0D").replace("\n", "%0A")
            .replace("]", "%5D").replace(";", "%3B").replace("##vso[", "##vso%5B"))


class LocalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"warning: {msg}"
        return msg


class GitHubFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"::error::{escape_github(msg)}"
        if record.levelno >= logging.WARNING:
            return f"::warning::{escape_github(msg)}"
        if record.levelno <= logging.DEBUG:
            return f"::debug::{escape_github(msg)}"
        return log_safe(msg)


class AzureDevOpsFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"##vso[task.logissue type=error]{escape_azure(msg)}"
        if record.levelno >= logging.WARNING:
            return f"##vso[task.logissue type=warning]{escape_azure(msg)}"
        if record.levelno <= logging.DEBUG:
            return f"##[debug]{msg}"
        return log_safe(msg)


class SecretFilter(logging.Filter):
    """Replaces every registered secret in the final message with ***."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            msg = record.getMessage()
            for secret in sorted(self.secrets, key=len, reverse=True):
                msg = msg.replace(secret, "***")
            record.msg, record.args = msg, None
        return True


_SECRETS = SecretFilter()


def register_secret(value: str) -> None:
    if value and len(value) >= 4:
        _SECRETS.secrets.add(value)


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
