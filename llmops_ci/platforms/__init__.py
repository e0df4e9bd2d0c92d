"""Where results go: GitHub Actions, Azure Pipelines, or a local terminal (``Platform`` protocol + registry)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

from llmops_ci.core.http import Http
from llmops_ci.results.summary import Summary


@dataclass(frozen=True)
class Publication:
    """What a step hands to the platform: the results so far and what to do with them."""

    summary: Summary
    state_dir: Path
    comment: bool = True  # write the PR comment (when there is a PR)
    annotate: bool = False  # annotations for lint findings (once per job: the lint step)
    pr: int | None = None  # the PR number, when given on the command line
    echo: bool = False  # print the markdown (the `comment` step)


@dataclass
class Published:
    passed: bool
    comment_url: str | None = None
    comment: str = "skipped"  # created | updated | unchanged | skipped | failed


class Platform(Protocol):
    name: str

    def formatter(self) -> logging.Formatter: ...

    def mask(self, secret: str, out: TextIO) -> None:
        """Tell the CI system to hide ``secret`` wherever it shows up in the job log."""
        ...

    def publish(self, pub: Publication, environ: Mapping[str, str], http: Http, out: TextIO) -> Published:
        """PR comment, job summary, annotations and step outputs; never fails the build."""
        ...


def _registry() -> dict[str, Platform]:
    from llmops_ci.platforms.azure_devops import AzureDevOps
    from llmops_ci.platforms.github import GitHub
    from llmops_ci.platforms.local import Local

    return {"github": GitHub(), "azure-devops": AzureDevOps(), "local": Local()}


PLATFORMS: dict[str, Platform] = _registry()


def detect(choice: str, environ: Mapping[str, str]) -> Platform:
    if choice != "auto":
        return PLATFORMS[choice]
    if environ.get("GITHUB_ACTIONS") == "true":
        return PLATFORMS["github"]
    if environ.get("TF_BUILD", "").lower() == "true":
        return PLATFORMS["azure-devops"]
    return PLATFORMS["local"]
