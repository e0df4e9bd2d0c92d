"""Azure Pipelines: everything llmops-ci knows of it. Detection, the build's variables, logging commands and their
escaping, the log formatter, output variables, the summary tab, log issues, the token names, build tags, limits; the
one PR thread through the REST client in ``azure_devops_api`` (imported when a thread is written).

Stdlib only at import time: the action's first step runs ``llmops_ci.ci`` before llmops-ci is installed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO
from urllib.parse import quote

from llmops_ci.core import log
from llmops_ci.core.http import HttpFailure
from llmops_ci.core.safe_text import log_safe, neutral
from llmops_ci.platforms.base import CommandFormatter, Host, Publication, Published, finding_location

if TYPE_CHECKING:
    from llmops_ci.core.http import Http

logger = logging.getLogger("llmops_ci.azure_devops")
# Variables a job (or a task) holds that carry the CI system's own credential, or the address to trade one for an
# identity token; service connections as tasks see them (ENDPOINT_AUTH_<id>, ENDPOINT_AUTH_PARAMETER_...), secure
# files (SECUREFILE_TICKET_...)
CREDENTIALS = frozenset({"SYSTEM_ACCESSTOKEN", "SYSTEM_OIDCREQUESTURI", "AZURE_DEVOPS_EXT_PAT",
                         "AZURE_DEVOPS_EXT_GITHUB_PAT", "VSS_NUGET_ACCESSTOKEN", "VSS_NUGET_EXTERNAL_FEED_ENDPOINTS"})
CREDENTIAL_PREFIXES = ("ENDPOINT_AUTH", "SECUREFILE_")
COMMENT_LIMIT = 150_000
ISSUES_LIMIT = 50
PUBLISH_SECONDS = 60.0  # all API calls of one publish, retries included


def escape_azure(text: str) -> str:
    """Logging-command escaping for Azure Pipelines, and no line may start a new ##vso command."""
    return (neutral(text.replace("%", "%AZP25").replace("\r", "%0D").replace("\n", "%0A"))
            .replace("]", "%5D").replace(";", "%3B").replace("##vso[", "##vso%5B"))


def _prop(value: object) -> str:
    return escape_azure(str(value))


class AzureDevOpsFormatter(CommandFormatter):
    def issue(self, level: str, msg: str) -> str:
        return f"##vso[task.logissue type={level}]{escape_azure(msg)}"

    def debug(self, msg: str) -> str:
        return "\n".join(f"##[debug]{log_safe(line)}" for line in msg.splitlines() or [""])


def build_url(environ: Mapping[str, str]) -> str | None:
    """The build's results page (System.CollectionUri, System.TeamProject, Build.BuildId: predefined variables)."""
    collection, project, build = (environ.get("SYSTEM_COLLECTIONURI"), environ.get("SYSTEM_TEAMPROJECT"),
                                  environ.get("BUILD_BUILDID"))
    if not (collection and project and build and build.isdigit()):
        return None
    return f"{collection.rstrip('/')}/{quote(project)}/_build/results?buildId={build}"


class AzureDevOpsHost:
    name = "azure-devops"
    names: Mapping[str, str] = {"steps": "steps", "changed_since": "changedSince", "llm_cache": "llmCache",
                                "working_directory": "workingDirectory"}
    # step outputs of the run step (`$(llmops.passed)`) and job variables for the later steps
    OUTPUTS: Mapping[str, tuple[str, bool]] = {
        "passed": ("passed", True), "summary": ("summary", True), "exit-code": ("exitCode", True),
        "comment-url": ("commentUrl", True),
        "baseline-ready": ("LLMOPS_BASELINE_READY", False)}
    no_baseline = ("baseline: none found for the target branch; relative gate rules report 'no baseline' "
                   "(builds of defaultBranch publish one)")
    # what the state dir's artifact leaves out: the private prompt flow home holds the connections and the keyring
    # that decrypts them
    state_dir_files: Mapping[str, str] = {".artifactignore": "pf-home/\n"}

    def __init__(self, environ: Mapping[str, str], out: TextIO) -> None:
        self.environ, self.out = environ, out

    def refusal(self) -> str | None:
        return None

    def is_pull_request(self) -> bool:
        return self.environ.get("BUILD_REASON") == "PullRequest"

    def pull_request_number(self) -> int | None:
        number = self.environ.get("SYSTEM_PULLREQUEST_PULLREQUESTID", "")
        return int(number) if self.is_pull_request() and number.isdigit() else None

    def find_pull_request(self, http: Http) -> int | None:
        return self.pull_request_number()

    def pull_request_base(self) -> str | None:
        target = self.environ.get("SYSTEM_PULLREQUEST_TARGETBRANCH", "")
        if not self.is_pull_request() or not target:
            return None
        # refs/heads/<name> for Azure Repos, just <name> for GitHub repositories
        return target.removeprefix("refs/heads/")

    def comment_unsupported(self) -> str | None:
        provider = self.environ.get("BUILD_REPOSITORY_PROVIDER", "")
        if provider and provider != "TfsGit":
            return "PR thread: only Azure Repos pull requests get one; the report is on the summary tab"
        return None

    def message(self, level: str, text: str) -> None:
        if level in ("error", "warning"):
            self.out.write(f"##vso[task.logissue type={level}]{escape_azure(text)}\n")
        else:
            self.out.write(log_safe(text) + "\n")
        self.out.flush()

    def set_output(self, name: str, value: str) -> None:
        variable, is_output = self.OUTPUTS.get(name, (name, True))
        flag = ";isOutput=true" if is_output else ""
        self.out.write(f"##vso[task.setvariable variable={variable}{flag}]{escape_azure(value)}\n")
        if name == "exit-code":  # a job variable too: the baseline step reads $(LLMOPS_EXIT_CODE)
            self.out.write(f"##vso[task.setvariable variable=LLMOPS_EXIT_CODE]{escape_azure(value)}\n")
        self.out.flush()

    def published_passed(self) -> bool:
        return False  # the agent reads the log; a later setvariable simply wins


class AzureDevOps:
    name = "azure-devops"
    ends_job_processes = True
    credentials: frozenset[str] = CREDENTIALS
    credential_prefixes: tuple[str, ...] = CREDENTIAL_PREFIXES

    def detected(self, environ: Mapping[str, str]) -> bool:
        return environ.get("TF_BUILD", "").lower() == "true"

    def host(self, environ: Mapping[str, str], out: TextIO) -> Host:
        return AzureDevOpsHost(environ, out)

    def build_tags(self, environ: Mapping[str, str]) -> dict[str, str]:
        tags = {"git.commit": environ.get("BUILD_SOURCEVERSION", ""), "ci.build": environ.get("BUILD_BUILDID", ""),
                "ci.pr": environ.get("SYSTEM_PULLREQUEST_PULLREQUESTID", "")}
        return {k: v for k, v in tags.items() if v}

    def formatter(self) -> logging.Formatter:
        return AzureDevOpsFormatter()

    def mask(self, secret: str, out: TextIO) -> None:
        log.command(out, f"##vso[task.setsecret]{escape_azure(secret)}\n", secret=True)

    def publish(self, pub: Publication, environ: Mapping[str, str], http: Http, out: TextIO) -> Published:
        # the report needs llmops-ci's dependencies, which the wrappers' first steps run without
        from llmops_ci.report.comment import outcome, render

        result = Published(outcome(pub.summary).passed)
        if pub.annotate:
            for f in sorted(pub.summary.findings, key=lambda f: f.severity != "error")[:ISSUES_LIMIT]:
                props = [f"type={'error' if f.severity == 'error' else 'warning'}",
                         *finding_location(f, ("sourcepath", "linenumber", "columnnumber"), _prop),
                         f"code={_prop(f.rule)}"]
                log.command(out, f"##vso[task.logissue {';'.join(props)}]{escape_azure(str(f.message))}\n")
        pr = pub.pr or (int(environ["SYSTEM_PULLREQUEST_PULLREQUESTID"])
                        if environ.get("SYSTEM_PULLREQUEST_PULLREQUESTID", "").isdigit() else None)
        if pub.comment and pr is not None:
            with http.budget(PUBLISH_SECONDS):
                self._comment(pub, environ, http, pr, result)
        if pub.comment_only:
            return result
        summary_md = pub.state_dir / "summary.md"
        try:
            pub.state_dir.mkdir(parents=True, exist_ok=True)
            summary_md.write_text(render(pub.summary, limit=COMMENT_LIMIT * 4, full_report="the state dir artifact")
                                  + "\n", encoding="utf-8")
        except OSError as exc:
            logger.warning("could not write %s (%s); no summary tab for this step", summary_md, exc)
        else:
            log.command(out, f"##vso[task.uploadsummary]{_prop(summary_md.absolute())}\n")
        passed = "true" if result.passed else "false"
        log.command(out, f"##vso[task.setvariable variable=passed;isOutput=true]{passed}\n")
        summary_json = (pub.state_dir / "summary.json").absolute()
        # escaped: a state dir path with a line break must not start a command of its own
        log.command(out, f"##vso[task.setvariable variable=summary;isOutput=true]{_prop(summary_json)}\n")
        if result.comment_url:
            log.command(out, f"##vso[task.setvariable variable=commentUrl;isOutput=true]{_prop(result.comment_url)}\n")
        return result

    def _comment(self, pub: Publication, environ: Mapping[str, str], http: Http, pr: int, result: Published) -> None:
        from llmops_ci.platforms.azure_devops_api import AzureDevOpsThreads
        from llmops_ci.report.comment import render

        needed = ("SYSTEM_COLLECTIONURI", "SYSTEM_TEAMPROJECTID", "BUILD_REPOSITORY_ID", "SYSTEM_ACCESSTOKEN")
        missing = [name for name in needed if not environ.get(name)]
        if missing:
            logger.warning("no PR comment: %s not set (map it in the pipeline: env: SYSTEM_ACCESSTOKEN: "
                           "$(System.AccessToken))", ", ".join(missing))
            return
        client = AzureDevOpsThreads(http, environ["SYSTEM_COLLECTIONURI"], environ["SYSTEM_TEAMPROJECTID"],
                                    environ["BUILD_REPOSITORY_ID"], environ["SYSTEM_ACCESSTOKEN"])
        run_url = build_url(environ)
        body = render(pub.summary, limit=COMMENT_LIMIT, full_report="the build summary tab and the state dir artifact",
                      run_url=run_url, artifacts_url=f"{run_url}&view=artifacts" if run_url else None)
        try:
            result.comment_url, result.comment = client.upsert(pr, body, "fixed" if result.passed else "active")
        except HttpFailure as exc:
            result.comment = "failed"
            if exc.status in (401, 403) or "TF401027" in exc.text:
                logger.warning("could not write the PR thread (HTTP %s): grant 'Contribute to pull requests' to the "
                               "build service identity in the repository's security settings; the report is on the "
                               "summary tab", exc.status)
            else:
                logger.warning("could not write the PR thread: %s; the report is on the summary tab", exc)
