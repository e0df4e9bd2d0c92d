"""llmops.yaml and run.yml: typed values, ${env:...}, relative paths, located errors with a fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci.config import load_config, read_config
from llmops_ci.core.errors import ConfigError, UsageError
from tests.helpers.projects import Project

ENV = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "test-key-123"}


def test_typed_config_with_paths_relative_to_the_file(project: Callable[..., Project], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    proj = project()
    monkeypatch.chdir(tmp_path.parent)  # paths must not depend on the working directory
    config = load_config(proj.path("llmops.yaml"), ENV)
    flow = config.flows["classify"]
    assert flow.path == proj.path("flows/classify")
    assert flow.data == proj.path("data/classify.jsonl")
    assert flow.column_mapping == {"text": "${data.text}"}
    assert flow.variant == "${classify.variant_0}"
    assert flow.connections == {"classify": {"connection": "openai", "model": "gpt-4o-mini"}}
    assert flow.max_failed_lines == 0
    assert flow.evaluations["accuracy"].path == proj.path("flows/eval")
    assert flow.evaluations["accuracy"].data is None
    assert flow.gate["accuracy.accuracy"].min == 0.8
    assert flow.gate["accuracy.accuracy"].max_drop == 0.05
    assert config.connections["openai"].values == {"base_url": ENV["OPENAI_BASE_URL"],
                                                   "api_key": ENV["OPENAI_API_KEY"]}


def test_unset_env_is_an_error_naming_it_with_file_and_line(project: Callable[..., Project]) -> None:
    proj = project()
    with pytest.raises(ConfigError) as err:
        load_config(proj.path("llmops.yaml"), {"OPENAI_BASE_URL": "x"})
    (problem,) = err.value.problems
    assert problem.where() == "llmops.yaml:6:14"
    assert "OPENAI_API_KEY is not set" in problem.message
    assert "test-key" not in str(err.value)


def test_lint_mode_leaves_env_unresolved(project: Callable[..., Project]) -> None:
    config, problems = read_config(project().path("llmops.yaml"), environ=None)
    assert problems == []
    assert config is not None
    assert config.connections["openai"].values["api_key"] == "${env:OPENAI_API_KEY}"


def test_unknown_key_says_where_and_suggests(project: Callable[..., Project]) -> None:
    proj = project()
    proj.replace("llmops.yaml", "    column_mapping:", "    colum_mapping:")
    with pytest.raises(ConfigError) as err:
        load_config(proj.path("llmops.yaml"), ENV)
    messages = [str(p) for p in err.value.problems]
    assert messages == ["llmops.yaml:11:5: unknown key 'colum_mapping' in a flow; did you mean 'column_mapping'?"]


def test_top_level_unknown_key_and_missing_version(project: Callable[..., Project]) -> None:
    proj = project()
    proj.replace("llmops.yaml", "version: 1\n", "flow:\n  x: 1\n")
    _, problems = read_config(proj.path("llmops.yaml"), ENV)
    text = [str(p) for p in problems]
    assert "llmops.yaml:1:1: unknown key 'flow' at the top of llmops.yaml; did you mean 'flows'?" in text
    assert any("missing required key 'version'" in t for t in text)


@pytest.mark.parametrize(("snippet", "expected"), [
    ("  Bad_Name:\n    path: x\n", "'Bad_Name' is not a valid name"),
    ("  x:\n    data: d.jsonl\n", "needs 'path:'"),
    ("  x:\n    path: p\n    run_file: r.yml\n", "either 'run_file' or 'path'"),
    ("  x:\n    path: p\n    deploy: {endpoint: e, traffic: [50, 20]}\n", "rising percentages"),
    ("  x:\n    path: p\n    deploy: {endpoint: e, traffic: [10, 10, 100]}\n", "each above the last"),
    ("  x:\n    path: p\n    deploy: {endpoint: e, traffic: [10, 100, 100]}\n", "each above the last"),
    ("  x:\n    path: p\n    deploy: {endpoint: e, request_timeout_ms: 300000}\n", "over 180000"),
    ("  x:\n    path: p\n    deploy: {endpoint: e, keep_previous: 15}\n", "keep_previous must be 0 to 14"),
    ("  x:\n    path: p\n    deploy: {endpoint: e, identity: {type: user_assigned, resource_id: x}}\n",
     "needs resource_id"),
    ("  x:\n    path: p\n    deploy: {endpoint: e, identity: {type: user_assigned}}\n", "needs client_id"),
    ("  x:\n    path: p\n    deploy: {endpoint: e, probes: {liveness: {delay: 1}}}\n",
     "unknown key 'delay' in a probe"),
    ("  x:\n    path: p\n    deploy: {endpoint: e, scale_to_zero: yes please}\n", "scale_to_zero"),
    ("  x:\n    path: p\n    gate: {accuracy: {min: 1}}\n", "'<evaluation>.<metric>'"),
    ("  x:\n    path: p\n    max_failed_lines: -1\n", "0 or more"),
])
def test_flow_entry_errors(snippet: str, expected: str, project: Callable[..., Project]) -> None:
    proj = project({"llmops.yaml": "version: 1\nflows:\n" + snippet}, base=False)
    _, problems = read_config(proj.path("llmops.yaml"), ENV)
    assert any(expected in p.message for p in problems), problems
    assert all(p.line is not None for p in problems)


def test_connection_fields_depend_on_type(project: Callable[..., Project]) -> None:
    proj = project({"llmops.yaml": """\
        version: 1
        connections:
          aoai: {type: azure_open_ai, api_base: x, api_key: y, api_version: "2024-06-01"}
          oai: {type: open_ai, api_base: x, api_key: y}
          other: {type: openai}
          c: {type: custom, configs: {a: 1}, secrets: {k: "${env:K}"}}
        flows: {}
        """}, base=False)
    _, problems = read_config(proj.path("llmops.yaml"), environ=None)
    text = [str(p) for p in problems]
    assert text[0] == ("llmops.yaml:4:24: unknown key 'api_base' in a connection of type open_ai; "
                       "did you mean 'api_key'?")
    assert "did you mean 'open_ai'?" in text[1] and text[1].startswith("llmops.yaml:5:")
    assert len(text) == 2


def test_run_file_supplies_the_run(project: Callable[..., Project]) -> None:
    proj = project({
        "runs/classify.run.yml": """\
            $schema: https://azuremlschemas.azureedge.net/promptflow/latest/Run.schema.json
            flow: ../flows/classify
            data: ../data/classify.jsonl
            column_mapping:
              text: ${data.text}
            variant: ${classify.variant_1}
            environment_variables:
              LOG_LEVEL: info
            connections:
              classify:
                connection: openai
            """,
        "llmops.yaml": "version: 1\nconnections:\n  openai: {type: open_ai, api_key: '${env:K}'}\n"
                       "flows:\n  c:\n    run_file: runs/classify.run.yml\n"
                       "    connections:\n      classify: {deployment_name: gpt-4o}\n",
    })
    config = load_config(proj.path("llmops.yaml"), {"K": "k"})
    flow = config.flows["c"]
    assert flow.path == proj.path("flows/classify")
    assert flow.data == proj.path("data/classify.jsonl")
    assert flow.variant == "${classify.variant_1}"
    assert flow.environment_variables == {"LOG_LEVEL": "info"}
    assert flow.connections == {"classify": {"connection": "openai", "deployment_name": "gpt-4o"}}
    assert flow.run_file == proj.path("runs/classify.run.yml")


def test_run_file_unknown_key_points_into_the_run_file(project: Callable[..., Project]) -> None:
    proj = project({"r.yml": "flow: flows/classify\ncolumn_mapings: {}\n",
                    "llmops.yaml": "version: 1\nflows:\n  c:\n    run_file: r.yml\n"})
    _, problems = read_config(proj.path("llmops.yaml"), {})
    assert [str(p) for p in problems] == [
        "r.yml:2:1: unknown key 'column_mapings' in a run.yml (see Run.schema.json); did you mean 'column_mapping'?"]


def test_missing_run_file(project: Callable[..., Project]) -> None:
    proj = project({"llmops.yaml": "version: 1\nflows:\n  c:\n    run_file: nope.yml\n"}, base=False)
    _, problems = read_config(proj.path("llmops.yaml"), {})
    assert [(p.rule, p.line) for p in problems] == [("path-missing", 4)]


def test_not_a_mapping(project: Callable[..., Project]) -> None:
    proj = project({"llmops.yaml": "- just\n- a list\n"}, base=False)
    config, problems = read_config(proj.path("llmops.yaml"), {})
    assert config is None and "must be a mapping" in problems[0].message


def test_select_flows(project: Callable[..., Project]) -> None:
    config = load_config(project().path("llmops.yaml"), ENV)
    assert [f.name for f in config.select(None)] == ["classify"]
    with pytest.raises(UsageError, match=r"no such flow.*did you mean 'classify'"):
        config.select(["clasify"])
