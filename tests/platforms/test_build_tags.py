"""What a registered model records of the build (``git.commit``, ``ci.build``, ``ci.pr``), from each platform's
predefined variables, whichever ``--platform`` was chosen."""

from __future__ import annotations

import pytest

from llmops_ci.platforms import PLATFORMS, build_tags


@pytest.mark.parametrize(("environ", "tags"), [
    ({"GITHUB_SHA": "abc123", "GITHUB_RUN_ID": "99", "GITHUB_REF": "refs/pull/42/merge"},
     {"git.commit": "abc123", "ci.build": "99", "ci.pr": "42"}),
    ({"GITHUB_SHA": "abc123", "GITHUB_RUN_ID": "99", "GITHUB_REF": "refs/heads/main"},
     {"git.commit": "abc123", "ci.build": "99"}),
    ({"BUILD_SOURCEVERSION": "def456", "BUILD_BUILDID": "7", "SYSTEM_PULLREQUEST_PULLREQUESTID": "12"},
     {"git.commit": "def456", "ci.build": "7", "ci.pr": "12"}),
    ({}, {}),
])
def test_build_tags(environ: dict[str, str], tags: dict[str, str]) -> None:
    assert build_tags(environ) == tags


def test_a_laptop_has_none() -> None:
    assert PLATFORMS["local"].build_tags({"GITHUB_SHA": "abc123"}) == {}
