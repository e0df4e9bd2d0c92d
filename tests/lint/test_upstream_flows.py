"""microsoft/promptflow's example flows lint with no false error, with and without an llmops.yaml.

The full set (examples/flows: standard, chat, evaluation, integrations) is linted when a copy is on this machine
(``LLMOPS_UPSTREAM_FLOWS``, default /work/upstream/promptflow/examples/flows); the three flows copied into
tests/kinds/data/upstream are linted always. Run this file as a script to print every finding.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from llmops_ci.diagnostics.findings import ERROR, Finding
from llmops_ci.kinds import inspect, kind_for
from llmops_ci.lint.project import LintRequest, lint
from llmops_ci.project.discover import discover

COPIES = Path(__file__).parents[1] / "kinds" / "data" / "upstream"
FULL = Path(os.environ.get("LLMOPS_UPSTREAM_FLOWS", "/work/upstream/promptflow/examples/flows"))

# The errors that are real, with the reason (the "two that fail there do so for real reasons"):
REAL_ERRORS = {
    # its tool files are symlinks that a script creates (the repo holds none): prompt flow cannot run it either
    ("standard/flow-with-symlinks", "tool-file-missing"),
    # LLM nodes exported without a connection: prompt flow refuses to run them until one is given
    ("chat/promptflow-copilot", "llm-connection-missing"),
    # a flex flow naming a requirements.txt its folder does not have (the one there sits a folder up)
    ("integrations/unify-ai/eval_code_flow/code-eval-flow.flex.yaml", "requirements-missing"),
}
# With an llmops.yaml that names the data file beside each flow, two of those files are unusable for real:
REAL_DATA_ERRORS = {
    ("chat/chat-basic", "data-parse"),  # data.jsonl is 0 bytes: a batch run would have no line to run
    # data.jsonl holds pretty-printed JSON objects over many lines, not JSON Lines: prompt flow cannot read it
    ("chat/use_functions_with_chat_models", "data-parse"),
}


def _flow_of(finding: Finding, root: Path) -> str:
    """The flow a finding is in, relative to ``root`` (or the finding's file when it is in none)."""
    path = Path(finding.path).absolute()
    if path.name in ("flow.dag.yaml", "flow.dag.yml"):
        path = path.parent  # a DAG flow is its folder
    for parent in [path, *path.parents]:
        if parent.is_relative_to(root) and parent != root and kind_for(parent) is not None:
            return parent.relative_to(root).as_posix()
    return finding.path


def config_for(flows: list[Path], root: Path, dest: Path) -> Path:
    """An llmops.yaml a new user would write: every flow with the data beside it, every connection it names."""
    connections: dict[str, dict[str, str]] = {}
    entries: dict[str, dict[str, str]] = {}
    for flow in flows:
        folder = flow if flow.is_dir() else flow.parent
        data = sorted(folder.glob("*.jsonl"))
        info = inspect(flow)
        if not data or info is None:
            continue  # nothing to run it over: linted without a config only
        definition = folder / "flow.dag.yaml"
        dag = (yaml.safe_load(definition.read_text(encoding="utf-8")) or {}) if definition.is_file() else {}
        nodes = {n.get("name"): n for n in dag.get("nodes") or [] if isinstance(n, dict)}
        for use in info.connections:
            if not use.connection or "${" in use.connection:
                continue
            node = nodes.get(use.node) or {}
            # the type the flow is written for: an LLM node naming a deployment (and no model) is Azure OpenAI
            azure = node.get("provider") == "AzureOpenAI" or ("deployment_name" in use.params
                                                              and "model" not in use.params) or not use.llm
            connections.setdefault(use.connection, {
                "type": "azure_open_ai", "api_base": "${env:AZURE_OPENAI_ENDPOINT}",
                "api_key": "${env:AZURE_OPENAI_API_KEY}"} if azure else {
                "type": "open_ai", "api_key": "${env:OPENAI_API_KEY}"})
        name = flow.relative_to(root).as_posix().replace("/", "-").lower().replace(".", "-")
        entries[name] = {"path": os.path.relpath(flow, dest.parent), "data": os.path.relpath(data[0], dest.parent)}
    dest.write_text(yaml.safe_dump({"version": 1, "connections": connections, "flows": entries}, sort_keys=False),
                    encoding="utf-8")
    return dest


def lint_upstream(root: Path, tmp: Path) -> dict[str, list[Finding]]:
    """Every flow below ``root`` linted as `lint DIR` does, then each with the llmops.yaml a user would write for
    it (one project per flow: the same connection name means different things in different examples). The
    configs sit at the top of a copy of ``root``: a project keeps its flows inside its folder."""
    without = lint(LintRequest(paths=(root,))).findings
    copy = tmp / "flows"
    shutil.copytree(root, copy, symlinks=True)
    with_config: list[Finding] = []
    for i, flow in enumerate(discover(copy)):
        config = config_for([flow], copy, copy / f"llmops-{i}.yaml")
        with_config += [f for f in lint(LintRequest(config=config)).findings]
    return {"without a config": without, "with an llmops.yaml": [_moved(f, copy, root) for f in with_config]}


def _moved(finding: Finding, copy: Path, root: Path) -> Finding:
    """A finding in the copy, named as in ``root``."""
    path = Path(finding.path).absolute()
    if not path.is_relative_to(copy.absolute()):
        return finding
    return Finding(finding.rule, finding.severity, str(root / path.relative_to(copy.absolute())), finding.line,
                   finding.column, finding.message.replace(str(copy), str(root)))


def false_errors(findings: list[Finding], root: Path) -> list[Finding]:
    return [f for f in findings if f.severity == ERROR and (_flow_of(f, root), f.rule) not in REAL_ERRORS
            and (_flow_of(f, root), f.rule) not in REAL_DATA_ERRORS]


def test_the_copied_upstream_flows_lint_clean(tmp_path: Path) -> None:
    results = lint_upstream(COPIES, tmp_path)
    assert [f for f in results["without a config"] if f.severity == ERROR] == []
    errors = [f for f in results["with an llmops.yaml"] if f.severity == ERROR]
    # chat-basic's data.jsonl is empty upstream too; chat-stream's class entry requires model_config, which the
    # config written here (path and data only) does not give: pf refuses to run it without init too
    assert sorted((_flow_of(f, COPIES), f.rule) for f in errors if f.rule != "flex-init-mismatch") == \
        [("chat-basic", "data-parse")]
    init = [f for f in errors if f.rule == "flex-init-mismatch"]
    assert len(init) == 1 and "requires model_config" in init[0].message


@pytest.mark.skipif(not FULL.is_dir(), reason=f"no copy of prompt flow's examples at {FULL}")
def test_every_upstream_example_flow_lints_without_a_false_error(tmp_path: Path) -> None:
    results = lint_upstream(FULL, tmp_path)
    assert len(discover(FULL)) >= 35
    for mode, findings in results.items():
        assert false_errors(findings, FULL) == [], mode
    real = {(_flow_of(f, FULL), f.rule) for f in results["without a config"] if f.severity == ERROR}
    assert real == REAL_ERRORS  # and those two do fail, for the reasons given
    real = {(_flow_of(f, FULL), f.rule) for f in results["with an llmops.yaml"] if f.severity == ERROR}
    assert REAL_DATA_ERRORS <= real <= REAL_ERRORS | REAL_DATA_ERRORS  # (those two have no data: not configured)


if __name__ == "__main__":  # print what came out, for the record
    import tempfile

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else FULL
    with tempfile.TemporaryDirectory() as tmp:
        results = lint_upstream(root, Path(tmp))
        print(f"{len(discover(root))} flows under {root}")
        for mode, findings in results.items():
            by_rule: dict[str, int] = {}
            for f in findings:
                by_rule[f"{f.severity} {f.rule}"] = by_rule.get(f"{f.severity} {f.rule}", 0) + 1
            print(f"\n== {mode}: {json.dumps(dict(sorted(by_rule.items())))}")
            for f in findings:
                if f.severity == ERROR:
                    print(f"  {f.severity} {f.rule} {_flow_of(f, root)} {Path(f.path).name}:{f.line} {f.message}")
