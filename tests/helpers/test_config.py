"""The config builder writes what the loader reads: every key it names is a key of llmops.yaml, values that YAML
would read as something else are quoted, and ``Raw`` text is written as given."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops_ci.config import CONFIG, load_config
from llmops_ci.core.schema import MapOf
from tests.helpers.config import (
    Config,
    Connection,
    Deploy,
    Evaluation,
    Flow,
    Parity,
    Register,
    Rule,
    judged,
    openai_connection,
    raw_rules,
)
from tests.helpers.projects import BASE_CONFIG

ENV = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-test-" + "k" * 24}


def _struct(spec: Any) -> Any:
    return spec.value if isinstance(spec, MapOf) else spec


def _named(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - {"more", "fields"}


def test_every_key_the_builder_names_is_a_key_of_llmops_yaml() -> None:
    flow = _struct(CONFIG.fields["flows"])
    assert _named(Config) <= set(CONFIG.fields)
    assert _named(Flow) <= set(flow.fields)
    for cls, key in ((Evaluation, "evaluations"), (Rule, "gate"), (Parity, "parity"), (Register, "register"),
                     (Deploy, "deploy")):
        assert _named(cls) <= set(_struct(flow.fields[key]).fields), cls


def test_the_base_project_loads_as_written(tmp_path: Path) -> None:
    config = load_config(BASE_CONFIG.write(tmp_path / "llmops.yaml"), ENV)
    (flow,) = config.flows.values()
    assert (flow.name, flow.variant, list(flow.evaluations)) == ("classify", "${classify.variant_0}", ["accuracy"])
    assert [(r.metric, r.min, r.max, r.max_drop) for r in flow.gate.values()] == [
        ("accuracy.accuracy", 0.8, None, 0.05), ("run.latency_p95", None, 4.0, None)]


def test_every_field_reads_back_as_given(tmp_path: Path) -> None:
    tricky = ["2024-06-01", "true", "1", "null", "a: b", "#x", "${data.x}", "[x]", "{x}", " lead", "it's", "ü"]
    flow = Flow("flows/qa", data="data.jsonl", line_key="${data.id}", repeats=2,
                column_mapping={f"k{i}": v for i, v in enumerate(tricky)},
                connections={"node": {"connection": "c", "model": "${data.x}", "temperature": 0.5, "stream": True}},
                environment_variables={"A": "1", "B": "yes"}, init={"model_config": {"azure_deployment": "gpt-4o"}},
                evaluations={"judge": Evaluation("flows/judge", scores={"accuracy": "correct"},
                                                 column_mapping={"x": "${run.outputs.x}"})},
                parity=Parity("other", {"x": "y"}, "normalized"), register=Register("qa", tags={"team": "a: b"}),
                deploy=Deploy("qa-ep", traffic=[10, 100], more={"app_insights": False}),
                gate={"judge.accuracy": Rule(min=0, max_drop=0.05, significant=True, test="non_inferiority")},
                more={"unknown_key": "x"})
    config = Config(flows={"qa": flow}, connections={"c": Connection("azure_open_ai", {"api_version": "2024-06-01"})},
                    llm_cache={"mode": "replay"})
    assert yaml.safe_load(config.yaml()) == {
        "version": 1,
        "connections": {"c": {"type": "azure_open_ai", "api_version": "2024-06-01"}},
        "flows": {"qa": {
            "path": "flows/qa", "data": "data.jsonl", "line_key": "${data.id}", "repeats": 2,
            "column_mapping": {f"k{i}": v for i, v in enumerate(tricky)},
            "connections": {"node": {"connection": "c", "model": "${data.x}", "temperature": 0.5, "stream": True}},
            "environment_variables": {"A": "1", "B": "yes"}, "init": {"model_config": {"azure_deployment": "gpt-4o"}},
            "evaluations": {"judge": {"path": "flows/judge", "scores": {"accuracy": "correct"},
                                      "column_mapping": {"x": "${run.outputs.x}"}}},
            "parity": {"of": "other", "outputs": {"x": "y"}, "method": "normalized"},
            "register": {"name": "qa", "tags": {"team": "a: b"}},
            "deploy": {"endpoint": "qa-ep", "traffic": [10, 100], "app_insights": False},
            "gate": {"judge.accuracy": {"min": 0, "max_drop": 0.05, "significant": True, "test": "non_inferiority"}},
            "unknown_key": "x"}},
        "llm_cache": {"mode": "replay"}}


def test_gate_rules_and_node_connections_sit_on_one_line() -> None:
    text = BASE_CONFIG.yaml()
    assert "      classify: {connection: openai, model: gpt-4o-mini}\n" in text
    assert "      accuracy.accuracy: {min: 0.8, max_drop: 0.05}\n      run.latency_p95: {max: 4.0}\n" in text


@pytest.mark.parametrize("rule", ["{min: 0.5, test: equivalence}", "{min: .nan}", "[1, 2]", "{min: 0.5"])
def test_raw_values_are_written_as_given(rule: str) -> None:
    assert f"      judge.accuracy: {rule}\n" in judged(raw_rules(f"judge.accuracy: {rule}")).yaml()


def test_variants_of_a_config_leave_it_unchanged() -> None:
    before = BASE_CONFIG.yaml()
    changed = (BASE_CONFIG.with_flow("classify", repeats=3)
               .with_evaluation("classify", "accuracy", scores={"accuracy": "grade"})
               .add_flow("first", Flow(run_file="runs/a.run.yml"), before="classify")
               .add_flow("last", Flow("flows/x")))
    assert BASE_CONFIG.yaml() == before
    assert list(changed.flows) == ["first", "classify", "last"]
    assert list(changed.without_flow("classify").flows) == ["first", "last"]
    assert "    repeats: 3\n" in changed.yaml() and "        scores: {accuracy: grade}\n" in changed.yaml()
    assert openai_connection() == BASE_CONFIG.connections["openai"]
