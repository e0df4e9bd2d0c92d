"""Text from flows never acts in an output (terminal escapes, bidi overrides), and no value adds a step output."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import requests

from llmops_ci.core import log
from llmops_ci.core.http import Http
from llmops_ci.core.safe_text import code, log_safe, md, neutral
from llmops_ci.platforms import Publication
from llmops_ci.platforms.azure_devops import AzureDevOps, escape_azure
from llmops_ci.platforms.github import GitHub, escape_github, outputs
from llmops_ci.report.comment import render, render_text
from llmops_ci.results.summary import Summary

HOSTILE = "boom \x1b[2J\x1b]0;owned\x07 \u202eexe.txt\u202c \x9b31m \r\x00 done"
ACTING = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
SUMMARY = {"schema": "llmops-ci/summary@1", "flows": {"qa": {
    "run": {"name": "r", "status": "failed", "lines_total": 1, "lines_failed": 1, "error": HOSTILE,
            "errors": [{"line": 0, "error": HOSTILE}]},
    "gate": {"passed": False, "checks": [{"metric": "acc.\u202eycarucca", "value": 0.1, "rule": "min", "limit": 0.5,
                                          "passed": False}]}}}}


def test_neutral_shows_controls_instead_of_acting() -> None:
    shown = neutral(HOSTILE)
    assert not ACTING.search(shown)
    assert "␛[2J" in shown and "<U+202E>" in shown and "<U+009B>" in shown and "␍" in shown
    assert neutral("line one\n\tline two") == "line one\n\tline two"  # layout stays
    for out in (md(HOSTILE), code(HOSTILE), log_safe(HOSTILE), escape_github(HOSTILE), escape_azure(HOSTILE)):
        assert not ACTING.search(out), repr(out)


def test_the_comment_and_the_log_never_carry_raw_controls() -> None:
    assert not ACTING.search(render(Summary.parse(SUMMARY)).replace("\n", " "))
    assert not ACTING.search(render_text(Summary.parse(SUMMARY)).replace("\n", " "))
    stream = io.StringIO()
    log.SafeStream(stream).write(HOSTILE + "\n")
    assert not ACTING.search(stream.getvalue().replace("\n", " "))


def _github_outputs(text: str) -> dict[str, str]:
    """$GITHUB_OUTPUT read as the runner reads it (name=value, or name<<DELIMITER ... DELIMITER)."""
    found: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line:
            i += 1
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            found[name] = "\n".join(lines[i + 1:end])
            i = end + 1
        else:
            name, value = line.split("=", 1)
            assert name not in found, f"{name} written twice"
            found[name] = value
            i += 1
    return found


def test_a_state_dir_with_a_newline_adds_no_output(tmp_path: Path) -> None:
    state = tmp_path / "x\npassed=true\nsummary=etc-passwd"
    state.mkdir()
    target = tmp_path / "output.txt"
    failed = Summary.parse({"schema": "llmops-ci/summary@1", "flows": {"qa": {"gate": {"passed": False}}}})
    GitHub().publish(Publication(failed,
                                 state, comment=False), {"GITHUB_OUTPUT": str(target), "GITHUB_EVENT_NAME": "push"},
                     Http(requests.Session(), sleep=lambda s: None), io.StringIO())
    got = _github_outputs(target.read_text())
    assert got["passed"] == "false" and got["summary"] == str(state / "summary.json")
    assert set(got) == {"passed", "summary", "comment-url"}


def test_multiline_delimiters_are_random() -> None:
    first, second = outputs({"a": "1\n2"}), outputs({"a": "1\n2"})
    assert first != second and first.startswith("a<<ghadelimiter_") and outputs({"a": "b"}) == "a=b\n"


@pytest.mark.parametrize("bad", ["x\n##vso[task.complete result=Succeeded]done", "x\r\n##vso[task.setvariable "
                                                                                   "variable=passed]true"])
def test_azure_outputs_never_start_a_command(tmp_path: Path, bad: str) -> None:
    state = tmp_path / bad.replace("/", "_")
    state.mkdir()
    out = io.StringIO()
    failed = {"schema": "llmops-ci/summary@1", "flows": {"qa": {"gate": {"passed": False}}}}
    AzureDevOps().publish(Publication(Summary.parse(failed), state, comment=False), {},
                          Http(requests.Session(), sleep=lambda s: None), out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(line.startswith("##vso[task.") and line.count("##vso[") == 1 for line in lines)
    assert "##vso[task.setvariable variable=passed;isOutput=true]true" not in lines
