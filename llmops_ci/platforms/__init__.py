"""Where results go and what the wrappers run on: GitHub Actions, Azure Pipelines, or a laptop (the ``PLATFORMS``
registry; the protocols are in ``base``). A new CI system is its module and one line here.

Each platform's credential names and detection are handed to ``core.child_env`` when this registry is built, so
that no flow process gets them and lint refuses flows that name them; the layers below never import a platform.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TextIO

from llmops_ci.core import child_env
from llmops_ci.platforms.azure_devops import AzureDevOps
from llmops_ci.platforms.base import Host, Platform, Publication, Published
from llmops_ci.platforms.github import GitHub
from llmops_ci.platforms.local import Local

__all__ = ["FALLBACK", "PLATFORMS", "Host", "Platform", "Publication", "Published", "build_tags", "detect",
           "detect_host"]

PLATFORMS: dict[str, Platform] = {"github": GitHub(), "azure-devops": AzureDevOps(), "local": Local()}
FALLBACK = "local"  # where no CI system is detected


def register_credentials() -> None:
    """Hand every registered platform's credential names and detection to the child environment and redaction."""
    for platform in PLATFORMS.values():
        child_env.register_ci(platform.credentials, platform.credential_prefixes, platform.detected)


register_credentials()


def detect(choice: str, environ: Mapping[str, str]) -> Platform:
    """``--platform``: a registered name, or ``auto`` for the first platform that recognises its environment."""
    if choice != "auto":
        return PLATFORMS[choice]
    return next((p for name, p in PLATFORMS.items() if name != FALLBACK and p.detected(environ)),
                PLATFORMS[FALLBACK])


def detect_host(environ: Mapping[str, str], out: TextIO) -> Host:
    """The CI system the wrappers run on, by the same rule as ``--platform auto``."""
    return detect("auto", environ).host(environ, out)


def build_tags(environ: Mapping[str, str]) -> dict[str, str]:
    """What a registered model records of the build (``git.commit``, ``ci.build``, ``ci.pr``): each from the first
    platform whose variables name it, whichever ``--platform`` was chosen."""
    tags: dict[str, str] = {}
    for platform in PLATFORMS.values():
        for key, value in platform.build_tags(environ).items():
            tags.setdefault(key, value)
    return tags
