"""A config builder: ``llmops.yaml`` as typed values, rendered one fixed way.

Tests build the config they need instead of copying YAML: ``Config(flows={"qa": Flow("flows/qa", ...)})``,
then ``.with_flow("qa", repeats=3)`` for a variant of it. Keys come out in the order users write them, block
style, with gate rules, node connections and ``scores`` inline: a test that asserts a line number of the
config can count on the layout. ``Raw`` puts a value in as written (a hostile or deliberately wrong one).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class Raw(str):
    """A value written into the YAML exactly as given (one line): ``Raw("{min: 0.5, test: equivalence}")``."""


Value = Any  # a scalar, a Raw, a list or a mapping of them


@dataclass(frozen=True)
class Rule:
    """A gate rule (docs/gate.md)."""

    min: float | None = None
    max: float | None = None
    max_drop: float | None = None
    max_rise: float | None = None
    significant: bool | None = None
    against: str | None = None
    test: Literal["non_inferiority"] | None = None


@dataclass(frozen=True)
class Connection:
    type: Literal["open_ai", "azure_open_ai", "custom"]
    fields: Mapping[str, Value] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    path: str | None = None
    evaluator: str | None = None
    scorer: str | None = None
    data: str | None = None
    column_mapping: Mapping[str, str] | None = None
    scores: Mapping[str, str] | Raw | None = None
    connections: Mapping[str, Mapping[str, Value]] | None = None
    environment_variables: Mapping[str, str] | None = None
    init: Mapping[str, Value] | None = None


@dataclass(frozen=True)
class Parity:
    of: str
    outputs: Mapping[str, str] | None = None
    method: str | None = None


@dataclass(frozen=True)
class Register:
    name: str
    description: str | None = None
    tags: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Deploy:
    endpoint: str
    smoke_tests: str | None = None
    traffic: list[int] | None = None
    instance_type: str | None = None
    instance_count: int | None = None
    environment_variables: Mapping[str, str] | None = None
    request_timeout_ms: int | None = None
    more: Mapping[str, Value] = field(default_factory=dict)  # target-specific keys (docs/register-deploy.md)


@dataclass(frozen=True)
class Flow:
    path: str | None = None
    run_file: str | None = None
    mlflow_agent: Mapping[str, Value] | None = None
    agent_framework: Mapping[str, Value] | None = None
    data: str | None = None
    line_key: str | None = None
    cluster: str | None = None
    repeats: int | Raw | None = None
    gate_family: str | None = None
    max_failed_lines: int | None = None
    column_mapping: Mapping[str, str] | None = None
    variant: str | None = None
    connections: Mapping[str, Mapping[str, Value]] | None = None
    environment_variables: Mapping[str, str] | None = None
    init: Mapping[str, Value] | None = None
    resources: Mapping[str, str] | None = None
    evaluations: Mapping[str, Evaluation] | None = None
    parity: Parity | Raw | None = None
    register: Register | None = None
    deploy: Deploy | None = None
    gate: Mapping[str, Rule | Raw] | None = None
    more: Mapping[str, Value] = field(default_factory=dict)  # keys the builder does not name (unknown-key tests)


@dataclass(frozen=True)
class Config:
    flows: Mapping[str, Flow] = field(default_factory=dict)
    connections: Mapping[str, Connection] = field(default_factory=dict)
    llm_cache: Mapping[str, str] | None = None
    azureml: Mapping[str, str] | None = None
    databricks: Mapping[str, str] | None = None
    version: int | Raw = 1

    def with_flow(self, name: str, **changes: Any) -> Config:
        """This config with fields of flow ``name`` replaced."""
        return dataclasses.replace(self, flows={**self.flows, name: dataclasses.replace(self.flows[name], **changes)})

    def with_evaluation(self, flow: str, name: str, **changes: Any) -> Config:
        evaluations = dict(self.flows[flow].evaluations or {})
        evaluations[name] = dataclasses.replace(evaluations[name], **changes)
        return self.with_flow(flow, evaluations=evaluations)

    def add_flow(self, name: str, flow: Flow, before: str | None = None) -> Config:
        """This config with one more flow, last or just before flow ``before``."""
        flows = {}
        for key, value in self.flows.items():
            if key == before:
                flows[name] = flow
            flows[key] = value
        flows.setdefault(name, flow)
        return dataclasses.replace(self, flows=flows)

    def without_flow(self, name: str) -> Config:
        return dataclasses.replace(self, flows={k: v for k, v in self.flows.items() if k != name})

    def yaml(self) -> str:
        return "".join(_block(_config_doc(self), 0))

    def files(self) -> dict[str, str]:
        """The project files this config is: ``project(config.files(), base=False)``."""
        return {"llmops.yaml": self.yaml()}

    def write(self, path: Path) -> Path:
        path.write_text(self.yaml(), encoding="utf-8")
        return path


# --- the projects most tests start from ------------------------------------------------------------------------

def openai_connection() -> Connection:
    """An OpenAI connection read from the environment (the fake server's URL and a test key)."""
    return Connection("open_ai", {"base_url": "${env:OPENAI_BASE_URL}", "api_key": "${env:OPENAI_API_KEY}"})


def judged(gate: Mapping[str, Rule | Raw], *, scores: Mapping[str, str] | Raw | None = None, **flow: Any) -> Config:
    """The gate tests' project: flow ``qa`` (flows/qa on data.jsonl) judged by evaluation ``judge`` (flows/judge,
    its per-line output ``correct`` scoring ``accuracy``) under ``gate``; ``flow`` sets more of qa's fields."""
    judge = Evaluation("flows/judge", scores=scores if scores is not None else {"accuracy": "correct"})
    return Config(flows={"qa": Flow("flows/qa", data="data.jsonl", evaluations={"judge": judge}, gate=gate, **flow)})


def raw_rules(text: str) -> dict[str, Rule | Raw]:
    """Gate rules given as the YAML lines users write (``judge.accuracy: {min: 0.5}``), each value kept as written."""
    found: dict[str, Rule | Raw] = {}
    for line in text.strip().splitlines():
        metric, value = line.strip().split(": ", 1)
        found[metric] = Raw(value)
    return found


# --- rendering ---------------------------------------------------------------------------------------------------

class _Inline(dict[str, Any]):
    """A mapping rendered in flow style on its key's line."""


def _fields(value: Any) -> dict[str, Any]:
    """A dataclass as the mapping it is in YAML: unset fields left out, ``more`` merged in last."""
    out = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.name not in ("more", "fields")}
    out = {k: v for k, v in out.items() if v is not None}
    return {**out, **getattr(value, "fields", {}), **getattr(value, "more", {})}


def _config_doc(config: Config) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": config.version}
    if config.connections:
        doc["connections"] = {name: _fields(c) for name, c in config.connections.items()}
    doc["flows"] = {name: _flow_doc(flow) for name, flow in config.flows.items()}
    for key in ("llm_cache", "azureml", "databricks"):
        if getattr(config, key) is not None:
            doc[key] = getattr(config, key)
    return doc


def _connections(value: Mapping[str, Mapping[str, Value]]) -> dict[str, Any]:
    return {node: _Inline(override) for node, override in value.items()}


def _flow_doc(flow: Flow) -> dict[str, Any]:
    doc = _fields(flow)
    if flow.connections is not None:
        doc["connections"] = _connections(flow.connections)
    if flow.evaluations is not None:
        doc["evaluations"] = {name: _evaluation_doc(e) for name, e in flow.evaluations.items()}
    if isinstance(flow.parity, Parity):
        doc["parity"] = _fields(flow.parity)
    for key in ("register", "deploy"):
        if key in doc:
            doc[key] = _fields(doc[key])
    if flow.gate is not None:
        doc["gate"] = {metric: rule if isinstance(rule, Raw) else _Inline(_fields(rule))
                       for metric, rule in flow.gate.items()}
    return doc


def _evaluation_doc(evaluation: Evaluation) -> dict[str, Any]:
    doc = _fields(evaluation)
    if isinstance(evaluation.scores, Mapping):
        doc["scores"] = _Inline(evaluation.scores)
    if evaluation.connections is not None:
        doc["connections"] = _connections(evaluation.connections)
    return doc


def _block(value: Mapping[str, Any], indent: int) -> list[str]:
    lines = []
    pad = " " * indent
    for key, item in value.items():
        if isinstance(item, Mapping) and not isinstance(item, _Inline) and item:
            lines.append(f"{pad}{_scalar(key, False)}:\n")
            lines.extend(_block(item, indent + 2))
        else:
            lines.append(f"{pad}{_scalar(key, False)}: {_one_line(item, False)}\n")
    return lines


def _one_line(value: Any, inline: bool) -> str:
    """A value on one line: a scalar, or a list or mapping in flow style."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_scalar(k, True)}: {_one_line(v, True)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_one_line(v, True) for v in value) + "]"
    return _scalar(value, inline)


def _scalar(value: Any, inline: bool) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    return text if _reads_back(text, inline) else json.dumps(text)


def _reads_back(text: str, inline: bool) -> bool:
    """Whether ``text`` can stand unquoted (in a flow mapping when ``inline``) and still read as itself."""
    if not text or "\n" in text:
        return False
    try:
        return bool(yaml.safe_load(f"{{k: {text}}}" if inline else f"k: {text}") == {"k": text})
    except yaml.YAMLError:
        return False
