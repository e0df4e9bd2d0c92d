"""A value the schema refused never reaches the typed config: it is reported once and left out (or defaulted),
and a key written with a refused value still counts as written."""

from __future__ import annotations

from pathlib import Path

from llmops_ci.config import read_config

RUN_YML = """\
flow: flows/qa
data: data/qa.jsonl
display_name: 5
tags: {team: [a], owner: me}
identity: managed
environment_variables: {A: [1], B: b}
"""


def write(tmp_path: Path, flows: str, run_yml: str = RUN_YML) -> Path:
    (tmp_path / "flows" / "qa").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "qa.jsonl").write_text('{"q": "x"}\n')
    (tmp_path / "run.yml").write_text(run_yml)
    config = tmp_path / "llmops.yaml"
    config.write_text("version: 1\nconnections:\n  oai: {type: open_ai, api_key: k, model: [gpt]}\nflows:\n" + flows)
    return config


FLOW = """\
  qa:
    path: flows/qa
    max_failed_lines: true
    repeats: true
    environment_variables: {A: a, B: [1]}
    connections: {node: {connection: oai, temperature: [0]}}
    resources: {compute: 5, instance_type: small}
    evaluations:
      judge: {evaluator: "azure.ai.evaluation:F1ScoreEvaluator", scores: {f1: 5, ok: f1_score}, column_mapping: 3}
    gate:
      judge.f1: {min: high, max: 0.9, significant: yes-please, against: 7}
    register: {name: qa-model, description: 5, tags: {team: [a], owner: me}}
    deploy:
      endpoint: qa-ep
      instance_count: true
      request_timeout_ms: false
      smoke_tests: ""
      traffic: [10, x, 100]
      identity: {type: system_assigned, client_id: 5}
      probes: {liveness: {period: true, timeout: 3}}
    parity: {of: base, outputs: {answer: 5, text: text}, method: 3}
  base:
    path: flows/qa
  rf:
    run_file: run.yml
"""


def test_refused_values_never_reach_the_flow_spec(tmp_path: Path) -> None:
    config, problems = read_config(write(tmp_path, FLOW), None)
    assert config is not None and problems
    flow = config.flows["qa"]
    assert flow.max_failed_lines == 0 and type(flow.max_failed_lines) is int
    assert flow.repeats == 1 and type(flow.repeats) is int
    assert flow.environment_variables == {"A": "a"}
    assert flow.connections == {"node": {"connection": "oai"}}
    assert flow.resources == {"instance_type": "small"}
    judge = flow.evaluations["judge"]
    assert judge.scores == {"ok": "f1_score"} and judge.column_mapping == {}
    rule = flow.gate["judge.f1"]
    assert (rule.min, rule.max, rule.significant, rule.against) == (None, 0.9, False, None)
    assert flow.register is not None
    assert (flow.register.description, flow.register.tags) == (None, {"owner": "me"})
    deploy = flow.deploy
    assert deploy is not None
    assert (deploy.instance_count, deploy.request_timeout_ms, deploy.smoke_tests) == (1, None, None)
    assert type(deploy.instance_count) is int
    assert deploy.traffic == (10, 100)
    assert deploy.identity == {"type": "system_assigned"} and deploy.probes == {"liveness": {"timeout": 3}}
    assert flow.parity is not None
    assert (flow.parity.outputs, flow.parity.method) == ({"text": "text"}, "exact")
    assert config.connections["oai"].values == {"api_key": "k"}
    rf = config.flows["rf"]
    assert rf.run_details == {"tags": {"owner": "me"}}
    assert rf.environment_variables == {}  # run.yml refused as a whole: neither a mapping of values nor a path


def test_a_key_written_with_a_refused_value_still_counts_as_written(tmp_path: Path) -> None:
    flows = """\
  qa:
    path: 5
  ev:
    path: flows/qa
    evaluations: {judge: {path: [x]}}
    gate: {judge.acc: {test: non_inferiority, max_drop: a-little}}
    deploy: {endpoint: ev-ep, traffic: [50, x], identity: {type: system_assigned, resource_id: 5}}
"""
    config, problems = read_config(write(tmp_path, flows), None)
    assert config is not None and "qa" not in config.flows and config.flows["ev"].evaluations == {}
    said = [p.message for p in problems]
    assert not [m for m in said if "needs 'path:'" in m or "needs the limit" in m or "traffic must be" in m], said
    assert [m for m in said if "a system-assigned identity has neither" in m]
