"""The Azure DevOps platform against a loopback REST 7.1 server: one thread, found by its property."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from llmops_ci.core.http import Http
from llmops_ci.platforms import Publication
from llmops_ci.platforms.azure_devops import AzureDevOps
from llmops_ci.platforms.azure_devops_api import PROPERTY
from llmops_ci.results.summary import Summary
from tests.fakes.ado import FakeAzureDevOps

FAILED = {"schema": "llmops-ci/summary@1", "flows": {"qa": {"gate": {"passed": False, "checks": []}}},
          "lint": {"findings": [{"rule": "node-cycle", "severity": "error", "path": "f/flow.dag.yaml", "line": 3,
                                 "column": 1, "message": "a -> b -> a; see ##vso[task.complete]"}]}}
PASSED = {"schema": "llmops-ci/summary@1", "flows": {"qa": {"gate": {"passed": True, "checks": []}}}}


@pytest.fixture
def ado() -> Iterator[FakeAzureDevOps]:
    with FakeAzureDevOps() as server:
        yield server


def env(server: FakeAzureDevOps, pr: int = 17) -> dict[str, str]:
    return {"TF_BUILD": "True", "SYSTEM_COLLECTIONURI": server.url, "SYSTEM_TEAMPROJECTID": server.project_id,
            "BUILD_REPOSITORY_ID": server.repository_id, "SYSTEM_PULLREQUEST_PULLREQUESTID": str(pr),
            "SYSTEM_ACCESSTOKEN": server.token}


def publish(server: FakeAzureDevOps, summary: dict, tmp_path: Path, annotate: bool = False) -> tuple[str, object]:
    out = io.StringIO()
    publication = Publication(Summary.parse(summary), tmp_path / "state", annotate=annotate)
    result = AzureDevOps().publish(publication, env(server),
                                   Http(requests.Session(), sleep=lambda s: None), out)
    return out.getvalue(), result


def test_thread_found_by_property_and_status_follows_the_gate(ado: FakeAzureDevOps, tmp_path: Path) -> None:
    ado.add_thread(17, "a human's review comment")
    _, first = publish(ado, FAILED, tmp_path)
    ours = [t for t in ado.threads[17] if PROPERTY in t["properties"]]
    assert len(ours) == 1 and ours[0]["status"] == "active"
    assert first.comment == "created"  # type: ignore[attr-defined]
    _, second = publish(ado, PASSED, tmp_path)
    ours = [t for t in ado.threads[17] if PROPERTY in t["properties"]]
    assert len(ours) == 1 and len(ado.threads[17]) == 2
    assert ours[0]["status"] == "fixed"
    assert "✅" in ours[0]["comments"][0]["content"]
    assert second.comment == "updated"  # type: ignore[attr-defined]
    before = len(ado.requests)
    _, third = publish(ado, PASSED, tmp_path)
    assert third.comment == "unchanged"  # type: ignore[attr-defined]
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in ado.requests[before:]] == [
        ("GET", "threads"), ("GET", "connectionData")]  # who we are decides which marked thread is ours
    assert all(r.headers["authorization"] == f"Bearer {ado.token}" for r in ado.requests)


def test_missing_permission_is_a_warning_with_the_fix(ado: FakeAzureDevOps, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    ado.write_forbidden = True
    import logging
    logging.getLogger("llmops_ci").propagate = True
    with caplog.at_level(logging.WARNING, logger="llmops_ci"):
        out, result = publish(ado, FAILED, tmp_path)
    assert result.comment == "failed"  # type: ignore[attr-defined]
    assert "grant 'Contribute to pull requests' to the build service" in caplog.text
    assert "##vso[task.uploadsummary]" in out


def test_log_issues_summary_tab_and_outputs(ado: FakeAzureDevOps, tmp_path: Path) -> None:
    out, _ = publish(ado, FAILED, tmp_path, annotate=True)
    lines = out.splitlines()
    issue = next(line for line in lines if line.startswith("##vso[task.logissue"))
    assert issue.startswith("##vso[task.logissue type=error;sourcepath=f/flow.dag.yaml;linenumber=3;columnnumber=1;"
                            "code=node-cycle]")
    assert issue.count("##vso[") == 1  # the message's own ##vso[ is escaped
    summary = Path(next(line for line in lines if "uploadsummary" in line).split("]", 1)[1])
    assert "### Lint" in summary.read_text()
    assert "##vso[task.setvariable variable=passed;isOutput=true]false" in lines
    assert any(line.startswith("##vso[task.setvariable variable=commentUrl;isOutput=true]") for line in lines)
    content = json.dumps(ado.threads[17][0]["comments"][0]["content"])
    assert "##vso[" not in content


def test_a_thread_by_another_user_with_our_property_is_never_edited(ado: FakeAzureDevOps, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    forged = ado.add_thread(17, "forged: all checks passed", properties={PROPERTY: "1"}, author_id="mallory-id")
    _, first = publish(ado, FAILED, tmp_path)
    assert first.comment == "created"  # type: ignore[attr-defined]
    assert ado.contents(17)[0] == "forged: all checks passed"  # untouched
    assert not any(r.method == "PATCH" and f"/threads/{forged['id']}" in r.path for r in ado.requests)
    ours = [t for t in ado.threads[17] if t["comments"][0]["author"]["id"] == ado.identity_id]
    assert len(ours) == 1 and "❌" in ours[0]["comments"][0]["content"]
    _, second = publish(ado, PASSED, tmp_path)  # found again: ours, not the forged one
    assert second.comment == "updated" and len(ado.threads[17]) == 2  # type: ignore[attr-defined]
    assert "✅" in ours[0]["comments"][0]["content"]


def test_connection_data_answers_as_the_service_does(ado: FakeAzureDevOps) -> None:
    headers = {"Authorization": f"Bearer {ado.token}"}
    preview = requests.get(f"{ado.url}_apis/connectionData", params={"api-version": "7.1-preview.1"},
                           headers=headers, timeout=5)
    assert preview.status_code == 200 and preview.json()["authenticatedUser"]["id"] == ado.identity_id
    released = requests.get(f"{ado.url}_apis/connectionData", params={"api-version": "7.1"}, headers=headers,
                            timeout=5)
    assert released.status_code == 400 and released.json()["typeKey"] == "VssInvalidPreviewVersionException"
    assert requests.get(f"{ado.url}_apis/connectionData", params={"api-version": "7.1-preview.1"},
                        timeout=5).status_code == 401


def test_unknown_identity_posts_a_new_thread_and_edits_none(ado: FakeAzureDevOps, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    publish(ado, FAILED, tmp_path)
    monkeypatch.setattr(ado, "_connection_data", lambda rec: ado._error(404, "gone", "HttpException"))
    _, again = publish(ado, PASSED, tmp_path)
    assert again.comment == "created" and len(ado.threads[17]) == 2  # type: ignore[attr-defined]
