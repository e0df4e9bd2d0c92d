"""Where results go: GitHub Actions, Azure Pipelines, or a local terminal."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol, TextIO

from llmops_ci import log


class Platform(Protocol):
    name: str

    def formatter(self) -> logging.Formatter: ...

    def mask(self, secret: str, out: TextIO) -> None:
        """Tell the CI system to hide ``secret`` wherever it shows up in the job log."""
        ...


class GitHub:
    name = "github"

    def formatter(self) -> logging.Formatter:
        return log.GitHubFormatter()

    def mask(self, secret: str, out: TextIO) -> None:
        out.write(f"::add-mask::{log.escape_github(secret)}\n")


class AzureDevOps:
    name = "azure-devops"

    def formatter(self) -> logging.Formatter:
        return log.AzureDevOpsFormatter()

    def mask(self, secret: str, out: TextIO) -> None:
        out.write(f"##vso[task.setsecret]{log.escape_azure(secret)}\n")


class Local:
    name = "local"

    def formatter(self) -> logging.Formatter:
        return log.LocalFormatter()

    def mask(self, secret: str, out: TextIO) -> None:
        return


PLATFORMS: dict[str, Platform] = {"github": GitHub(), "azure-devops": AzureDevOps(), "local": Local()}


def detect(choice: str, environ: Mapping[str, str]) -> Platform:
    if choice != "auto":
        return PLATFORMS[choice]
    if environ.get("GITHUB_ACTIONS") == "true":
        return PLATFORMS["github"]
    if environ.get("TF_BUILD", "").lower() == "true":
        return PLATFORMS["azure-devops"]
    return PLATFORMS["local"]
