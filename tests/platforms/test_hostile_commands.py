"""Untrusted text (YAML keys, node and column names, folder names, outputs) never becomes a CI command."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable

import pytest

from llmops_ci.core import log
from llmops_ci.platforms.azure_devops import AzureDevOpsFormatter
from llmops_ci.platforms.github import GitHubFormatter
from llmops_ci.platforms.local import LocalFormatter
from tests.helpers.projects import CliResult, Project

Cli = Callable[..., CliResult]
FORGED = ("::error::forged", "::warning::forged", "##vso[task.complete result=Failed]forged",
          "##[error]forged", "::stop-commands::forged")
# what we emit on purpose: a log line's own prefix, an annotation, a mask; their payload is escaped
OURS = re.compile(r"^(::(error|warning|debug|notice)( [^:\n]*)?::|::add-mask::|##vso\[task\.(logissue|setsecret|"
                  r"uploadsummary|setvariable)[^\]\n]*\]|##\[debug\])")


def assert_inert(text: str) -> None:
    for line in text.splitlines():
        bare = line.lstrip()
        if bare.startswith(("::", "##")):
            assert OURS.match(bare), f"a line reads as a command: {line!r}"
            rest = OURS.sub("", bare, count=1)
            assert "##vso[" not in rest, f"##vso[ inside a line: {line!r}"
        else:
            assert "##vso[" not in line, f"##vso[ inside a line: {line!r}"


HOSTILE = {
    "llmops.yaml": """\
        version: 1
        flows:
          classify:
            path: flows/classify
            data: data/classify.jsonl
            column_mapping:
              text: ${data.text}
              "::error::forged": ${data.x}
        """,
    "flows/classify/flow.dag.yaml": """\
        inputs:
          text:
            type: string
        outputs:
          out:
            type: string
            reference: ${shout.output}
        nodes:
        - name: shout
          type: python
          source:
            type: code
            path: shout.py
          inputs:
            text: ${inputs.text}
            "##vso[task.complete result=Failed]forged": 1
        - name: "::warning::forged"
          type: python
          source: {type: code, path: shout.py}
          inputs:
            text: ${inputs.text}
        """,
    "flows/classify/shout.py": "from promptflow.core import tool\n\n\n@tool\ndef shout(text: str) -> str:\n"
                               "    return text\n",
    "data/classify.jsonl": '{"text": "a", "##[error]forged": 1}\n',
}


@pytest.mark.parametrize("platform", ["github", "azure-devops", "local"])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_lint_report_is_inert(platform: str, fmt: str, cli: Cli, project: Callable[..., Project],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    project(HOSTILE, base=False)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")  # --platform local on a CI runner is still read for commands
    result = cli("lint", "--platform", platform, "--format", fmt)
    assert result.code == 1
    assert "forged" in result.out + result.err  # reported, not hidden
    assert_inert(result.out)
    assert_inert(result.err)


def test_folder_name_with_a_newline_is_inert(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project(HOSTILE, base=False)
    (proj.root / "flows" / "classify").rename(proj.root / "flows" / "x\n::error::forged")
    proj.replace("llmops.yaml", "path: flows/classify", 'path: "flows/x\\n::error::forged"')
    result = cli("lint", "--platform", "github")
    assert result.code == 1
    assert_inert(result.out + result.err)


@pytest.mark.parametrize("formatter", [LocalFormatter(), GitHubFormatter(), AzureDevOpsFormatter()])
@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR])
def test_every_formatter_and_level_is_inert(formatter: logging.Formatter, level: int) -> None:
    stream = io.StringIO()
    logger = log.setup(formatter, stream=stream, verbose=True)
    logger.log(level, "line one\n%s\n  %s", "\n".join(FORGED), "##vso[task.setvariable variable=x]1")
    assert "forged" in stream.getvalue()
    assert_inert(stream.getvalue())


def test_stdout_of_every_step_is_inert() -> None:
    raw = io.StringIO()
    out = log.SafeStream(raw)  # type: ignore[arg-type]
    out.write('{\n  "answer": "ok"\n}\n' + "\n".join(FORGED) + "\nname  ##vso[task.complete]x\n")
    assert_inert(raw.getvalue())
