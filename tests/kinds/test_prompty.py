"""Kind ``prompty``: both formats; every rule breaks on one edit of a clean file and stays quiet on a near miss."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmops_ci.diagnostics.findings import RULES
from llmops_ci.kinds import KINDS, kind_for
from llmops_ci.kinds.base import FlowInput
from llmops_ci.kinds.prompty.checker import PROMPTY_RULES
from llmops_ci.kinds.prompty.format import PROMPTFLOW, PROMPTY2, file_format
from tests.conftest import Project

PF = "prompts/classify.prompty"
V2 = "prompts/summarize.prompty"
DATA = Path(__file__).parent / "data"

BASE: dict[str, str] = {
    PF: """\
        ---
        name: Classify
        description: Classify a web page
        model:
          api: chat
          configuration:
            type: azure_openai
            connection: aoai
            azure_deployment: gpt-4o-mini
          parameters:
            temperature: 0.0
            max_tokens: 64
            response_format:
              type: json_object
        inputs:
          url:
            type: string
          text_content:
            type: string
            default: ""
        outputs:
          category:
            type: string
          evidence:
            type: string
        sample:
          url: https://example.com
        ---
        system:
        Classify the page into one of: App, Channel, Movie, Academic, None.
        Answer as JSON with "category" and "evidence".

        user:
        URL: {{url}}
        Text: {{text_content}}
        """,
    V2: """\
        ---
        name: summarize
        description: Summarize a text
        model:
          id: gpt-4o-mini
          provider: openai
          apiType: chat
          connection:
            kind: key
            endpoint: ${env:OPENAI_BASE_URL}
            apiKey: ${env:OPENAI_API_KEY}
          options:
            temperature: 0.2
            maxOutputTokens: 200
        inputs:
          - name: text
            kind: string
          - name: style
            kind: string
            default: short
        template:
          format:
            kind: jinja2
          parser:
            kind: prompty
        ---
        system:
        Summarize the text in a {{style}} way.

        user:
        {{text}}
        """,
    "prompts/sample.json": '{"url": "https://example.com"}\n',
}

Edit = Callable[[Project], None]


def replace(rel: str, old: str, new: str) -> Edit:
    return lambda p: p.replace(rel, old, new)


def write(rel: str, text: str) -> Edit:
    return lambda p: p.write(rel, text)


def both(*edits: Edit) -> Edit:
    def run(p: Project) -> None:
        for e in edits:
            e(p)
    return run


@dataclass
class Case:
    bad: Edit
    good: Edit
    where: str
    line: int | None = None
    says: str = ""


CASES: dict[str, Case] = {
    "prompty-front-matter": Case(replace(PF, "---\nname: Classify", "name: Classify"),
                                 replace(PF, "---\nname: Classify", "\n\n---\nname: Classify"), PF, 1),
    "prompty-old-key": Case(replace(V2, "  - name: text\n    kind: string", "  - name: text\n    type: string"),
                            replace(V2, "    maxOutputTokens: 200", "    maxOutputTokens: 200\n"
                                    "    additionalProperties:\n      response_format: {type: json_object}"),
                            V2, 17, "2.x has 'kind: string'"),
    "prompty-body-separator": Case(replace(PF, "\nuser:", "---\nuser:"), replace(PF, "\nuser:", "***\nuser:"),
                                   PF, 32, "front matter up to the last"),
    "prompty-connection-conflict": Case(
        replace(PF, "    azure_deployment: gpt-4o-mini", "    azure_deployment: gpt-4o-mini\n"
                "    api_key: ${env:AZURE_OPENAI_API_KEY}"),
        replace(PF, "    connection: aoai", "    azure_endpoint: ${env:AZURE_OPENAI_ENDPOINT}\n"
                "    api_key: ${env:AZURE_OPENAI_API_KEY}"),
        PF, 10, "both 'connection' and 'api_key'"),
    "prompty-param-unknown": Case(replace(PF, "max_tokens: 64", "max_token: 64"), replace(PF, "max_tokens: 64",
                                                                                        "seed: 1"),
                                  PF, 12, "did you mean 'max_tokens'?"),
    "prompty-input-unused": Case(replace(PF, "inputs:\n", "inputs:\n  lang:\n    type: string\n    default: en\n"),
                                 both(replace(PF, "inputs:\n", "inputs:\n  lang:\n    type: string\n    default: en\n"),
                                      replace(PF, "Text: {{text_content}}", "Text: {{text_content}}\n"
                                              "{% if lang != 'en' %}Answer in {{ lang }}.{% endif %}")),
                                 PF, 16, "'lang'"),
    "prompty-file-missing": Case(replace(PF, "sample:\n  url: https://example.com", "sample: ${file:samples.json}"),
                                 replace(PF, "sample:\n  url: https://example.com", "sample: ${file:sample.json}"),
                                 PF, 26, "samples.json does not exist"),
    "prompty-env-ref": Case(replace(V2, "endpoint: ${env:OPENAI_BASE_URL}", "endpoint: ${env:OPENAI_HOST}/v1"),
                            replace(V2, "endpoint: ${env:OPENAI_BASE_URL}", "endpoint: ${env:OPENAI_BASE_URL:"
                                    "http://127.0.0.1:8000/v1}"),
                            V2, 10, "replaces only a whole value"),
    "prompty-kind-unknown": Case(replace(V2, "  - name: text\n    kind: string", "  - name: text\n    kind: str"),
                                 replace(V2, "  - name: text\n    kind: string", "  - name: text\n    kind: thread"),
                                 V2, 17, "did you mean 'string'?"),
    "prompt-var-unbound": Case(replace(PF, "URL: {{url}}", "URL: {{url}} {{title}}"),
                               replace(PF, "URL: {{url}}", "{% set title = url %}URL: {{title}}"),
                               PF, 34, "'title'"),
    "prompt-syntax": Case(replace(V2, "{{text}}", "{% if text %}{{text}}"),
                          replace(V2, "{{text}}", "{% if text %}{{text}}{% endif %}"), V2, 31),
    "unknown-key": Case(replace(V2, "  options:", "  option:"), replace(V2, "description: Summarize a text",
                                                                       "displayName: Summarize"),
                        V2, 12, "did you mean 'options'?"),
    "missing-key": Case(lambda p: p.replace(PF, p.read(PF).split("  parameters:\n")[1].split("inputs:")[0], "")
                        or p.replace(PF, "  parameters:\n", ""),
                        lambda p: p.replace(PF, p.read(PF).split("  parameters:\n")[1].split("inputs:")[0], "")
                        or p.replace(PF, "  parameters:\n", "  parameters: {}\n"),
                        PF, 4, "prompt flow requires it"),
    "llm-model-missing": Case(replace(PF, "    azure_deployment: gpt-4o-mini\n", ""),
                              replace(PF, "    type: azure_openai\n    connection: aoai\n    azure_deployment: "
                                      "gpt-4o-mini", "    type: openai\n    connection: aoai\n    model: gpt-4o-mini"),
                              PF, 6, "sets no 'azure_deployment'"),
    "input-type": Case(replace(PF, "  url:\n    type: string", "  url:\n    type: str"),
                       replace(PF, "  url:\n    type: string", "  url:\n    type: object"), PF, 17,
                       "did you mean 'string'?"),
    "wrong-type": Case(both(replace(PF, "    connection: aoai\n", ""),
                            replace(PF, "type: azure_openai", "type: azure_open_ai")),
                       replace(PF, "type: azure_openai", "type: azure_open_ai"),  # ignored beside a connection
                       PF, 7, "did you mean 'azure_openai'?"),
}


@pytest.fixture
def files(project: Callable[..., Project]) -> Project:
    return project(BASE, base=False)


def findings(proj: Project, rel: str) -> list[tuple[str, str, int | None, str]]:
    info = KINDS["prompty"].inspect(proj.path(rel))
    return [(f.rule, f.path, f.line, f.message) for f in info.findings]


def test_every_prompty_rule_has_a_case() -> None:
    assert set(PROMPTY_RULES) <= set(CASES)
    assert set(PROMPTY_RULES) <= set(RULES)


@pytest.mark.parametrize("rel", [PF, V2])
def test_base_files_are_clean(rel: str, files: Project) -> None:
    assert findings(files, rel) == []


def test_prompt_flow_format_facts(files: Project) -> None:
    info = KINDS["prompty"].inspect(files.path(PF))
    assert file_format(files.path(PF)) == PROMPTFLOW
    assert (info.kind, info.folder, info.definition) == ("prompty", files.path("prompts"), files.path(PF))
    assert info.inputs == {"url": FlowInput("url", "string", False),
                           "text_content": FlowInput("text_content", "string", True)}
    assert info.outputs == {"category", "evidence"}
    assert [(c.node, c.connection, c.path, c.line, c.llm) for c in info.connections] == [
        ("classify", "aoai", PF, 8, False)]


def test_prompty2_format_facts(files: Project) -> None:
    info = KINDS["prompty"].inspect(files.path(V2))
    assert file_format(files.path(V2)) == PROMPTY2
    assert info.inputs == {"text": FlowInput("text", "string", False), "style": FlowInput("style", "string", True)}
    assert info.outputs == {"output"}
    assert info.connections == []


def test_inputs_from_sample_when_none_are_declared(files: Project) -> None:
    text = files.read(PF)
    head, body = text.split("inputs:\n")[0], text.split("sample:")[1]
    files.write(PF, head + "sample:" + body)
    info = KINDS["prompty"].inspect(files.path(PF))
    assert set(info.inputs) == {"url"}
    # prompt flow passes only the signature's inputs: text_content renders empty
    assert [(f.rule, f.line) for f in info.findings] == [("prompt-var-unbound", 24)]


def test_no_inputs_and_no_sample_renders_every_variable_empty(files: Project) -> None:
    text = files.read(PF)
    files.write(PF, text.split("inputs:\n")[0] + "---\nuser:\n{{url}}\n")
    assert [f[0] for f in findings(files, PF)] == ["prompt-var-unbound"]


def test_mustache_template_variables(files: Project) -> None:
    files.replace(V2, "    kind: jinja2", "    kind: mustache")
    files.replace(V2, "{{text}}", "{{text}} {{#tags}}{{name}}{{/tags}}")
    got = [(f[0], f[2], f[3].split("'")[1]) for f in findings(files, V2)]
    assert got == [("prompt-var-unbound", 31, "{{ tags }}")]  # name is a field of each tag
    assert KINDS["prompty"].format_of(KINDS["prompty"].inspect(files.path(V2))) == PROMPTY2  # type: ignore[attr-defined]


def test_prompty2_without_inputs_takes_template_variables(files: Project) -> None:
    text = files.read(V2)
    files.write(V2, text.split("inputs:\n")[0] + "template:" + text.split("template:")[1])
    info = KINDS["prompty"].inspect(files.path(V2))
    assert info.findings == []
    assert set(info.inputs) == {"text", "style"}


def test_old_format_meant_for_2x_names_every_changed_key(files: Project) -> None:
    """A prompt flow file that gained one 2.x key (model.id): each old key is named with its replacement."""
    files.replace(PF, "  api: chat\n", "  id: gpt-4o-mini\n  api: chat\n")
    got = {(f[2], f[3].split("'")[1]) for f in findings(files, PF) if f[0] == "prompty-old-key"}
    assert got == {(6, "model.api"), (7, "model.configuration"), (11, "model.parameters"), (12, "temperature"),
                   (13, "max_tokens"), (18, "inputs.url.type"), (20, "inputs.text_content.type"),
                   (24, "outputs.category.type"), (26, "outputs.evidence.type"), (27, "sample")}
    messages = " ".join(f[3] for f in findings(files, PF))
    assert "model.apiType" in messages and "options.maxOutputTokens" in messages and "kind: string" in messages


def test_template_string_is_named_for_2x(files: Project) -> None:
    files.replace(V2, "template:\n  format:\n    kind: jinja2\n  parser:\n    kind: prompty\n", "template: jinja2\n")
    hits = [f for f in findings(files, V2) if f[0] == "prompty-old-key"]
    assert len(hits) == 1 and "template: {format: {kind: jinja2}" in hits[0][3]


def test_pf_env_default_is_not_supported(files: Project) -> None:
    files.replace(PF, "    connection: aoai\n", "    azure_endpoint: ${env:AOAI_ENDPOINT:https://x.openai.azure.com}\n")
    assert [f[0] for f in findings(files, PF)] == ["prompty-env-ref"]


def test_v2_reference_connection_is_a_connection_use(files: Project) -> None:
    files.replace(V2, "    kind: key\n    endpoint: ${env:OPENAI_BASE_URL}\n    apiKey: ${env:OPENAI_API_KEY}\n",
                  "    kind: reference\n    name: openai\n")
    info = KINDS["prompty"].inspect(files.path(V2))
    assert info.findings == []
    assert [(c.connection, c.line) for c in info.connections] == [("openai", 10)]


def test_literal_key_is_a_secret_finding(files: Project) -> None:
    files.replace(V2, "apiKey: ${env:OPENAI_API_KEY}", "apiKey: sk-abcdefghijklmnopqrstuvwxyz012345")
    hits = [f for f in findings(files, V2) if f[0] == "secret-literal"]
    assert hits and hits[0][2] == 11 and "sk-abc" not in hits[0][3]


def test_broken_yaml_and_unclosed_front_matter(files: Project) -> None:
    files.replace(PF, "name: Classify", "name: [Classify")
    info = KINDS["prompty"].inspect(files.path(PF))
    assert not info.loaded and [(f.rule, f.line) for f in info.findings] == [("yaml-syntax", 3)]
    files.write(PF, "---\nname: x\nuser:\n{{x}}\n")
    assert [f[0] for f in findings(files, PF)] == ["prompty-front-matter"]


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires(rule: str, files: Project) -> None:
    case = CASES[rule]
    case.bad(files)
    got = findings(files, case.where)
    hits = [f for f in got if f[0] == rule]
    assert hits, f"{rule} did not fire; got {got}"
    _, path, line, message = hits[0]
    assert path == case.where
    if case.line is not None:
        assert line == case.line, hits[0]
    assert case.says in message


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_near_miss_is_clean(rule: str, files: Project) -> None:
    CASES[rule].good(files)
    assert findings(files, PF) == [] and findings(files, V2) == []


def test_matching(files: Project) -> None:
    kind = KINDS["prompty"]
    assert kind_for(files.path(PF)) is kind
    assert not kind.matches(files.path("prompts"))  # two .prompty files: each is its own flow
    files.path(V2).unlink()
    assert kind.matches(files.path("prompts"))
    assert kind.inspect(files.path("prompts")).definition == files.path(PF)
    files.write("prompts/flow.flex.yaml", "entry: x:y\n")
    assert kind_for(files.path("prompts")) is KINDS["flex"]


def test_cli_discovers_each_prompty_file(files: Project, cli: Callable[..., object]) -> None:
    CASES["prompty-param-unknown"].bad(files)
    res = cli("lint", "--format", "json")
    assert res.code == 1  # type: ignore[attr-defined]
    out = json.loads(res.out)  # type: ignore[attr-defined]
    assert [(f["rule"], f["path"], f["line"]) for f in out["findings"]] == [("prompty-param-unknown", PF, 12)]
    assert cli("lint", V2).code == 0  # type: ignore[attr-defined]


def test_cli_config_checks_the_connection_is_declared(files: Project, cli: Callable[..., object]) -> None:
    files.write("data.jsonl", '{"url": "https://a.example", "text_content": "x"}\n')
    files.write("llmops.yaml", """\
        version: 1
        connections:
          aoai2:
            type: azure_open_ai
            api_base: ${env:AZURE_OPENAI_ENDPOINT}
            api_key: ${env:AZURE_OPENAI_API_KEY}
        flows:
          classify:
            path: prompts/classify.prompty
            data: data.jsonl
        """)
    res = cli("lint", "--config", "llmops.yaml", "--format", "json")
    rules = [(f["rule"], f["path"], f["line"]) for f in json.loads(res.out)["findings"]]  # type: ignore[attr-defined]
    # text_content has a default and a column of its own name: prompt flow runs the default, lint says so
    assert rules == [("input-default-shadowed", "llmops.yaml", 9), ("connection-undeclared", PF, 8)]
    files.replace("llmops.yaml", "aoai2:", "aoai:")
    assert cli("lint", "--config", "llmops.yaml").code == 0  # type: ignore[attr-defined]


UPSTREAM = ["prompty/basic/basic.prompty", "prompty/chat-basic/chat.prompty", "prompty/eval-apology/apology.prompty",
            "prompty/format-output/json_format.prompty", "prompty/format-output/all_response.prompty",
            "flex-flows/chat-basic/chat.prompty"]


@pytest.mark.parametrize("rel", UPSTREAM)
def test_upstream_prompty_examples_lint_clean(rel: str) -> None:
    """Copies of microsoft/promptflow examples (MIT): prompt flow's format, no finding."""
    info = KINDS["prompty"].inspect(DATA / rel)
    assert file_format(DATA / rel) == PROMPTFLOW
    assert [(f.rule, f.line, f.message) for f in info.findings] == []


def test_upstream_eval_basic_has_a_real_unbound_variable() -> None:
    """examples/prompty/eval-basic/eval.prompty reads {{statement}}, which it never declares (ground_truth unused)."""
    info = KINDS["prompty"].inspect(DATA / "prompty/eval-basic/eval.prompty")
    assert sorted((f.rule, f.line) for f in info.findings) == [("prompt-var-unbound", 47), ("prompty-input-unused", 23)]


def test_byte_order_mark_and_crlf(files: Project) -> None:
    text = files.read(PF)
    files.path(PF).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert findings(files, PF) == []
    assert file_format(files.path(PF)) == PROMPTFLOW


@pytest.mark.parametrize("text", ["", "---\n", "---\n- a\n---\nx", "---\n: :\n---\n", "---\nmodel: [1]\ninputs: 3\n"
                                  "outputs: x\n---\n{{a}}", "---\nmodel: {id: x, connection: 3}\ninputs: [1]\n---\n"])
def test_malformed_files_are_findings_not_crashes(text: str, files: Project) -> None:
    files.write(PF, text)
    info = KINDS["prompty"].inspect(files.path(PF))
    assert info.findings and all(f.severity == "error" for f in info.findings if f.rule != "prompty-input-unused")


def test_snapshot_copies_the_folder(files: Project, tmp_path: Path) -> None:
    from llmops_ci.core.errors import UsageError

    kind = KINDS["prompty"]
    info = kind.inspect(files.path(PF))
    snap = kind.snapshot(info, tmp_path / "snap")  # type: ignore[attr-defined]
    assert snap.entry == tmp_path / "snap" / "classify.prompty"
    assert snap.entry.read_text() == files.read(PF) and (snap.folder / "sample.json").is_file()
    with pytest.raises(UsageError, match="no variants"):
        kind.snapshot(info, tmp_path / "snap", variant="${a.b}")  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="overrides are for DAG nodes"):
        kind.snapshot(info, tmp_path / "snap", overrides={"classify": {"connection": "x"}})  # type: ignore[attr-defined]
