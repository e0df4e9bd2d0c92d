"""Lint findings and the catalogue of rules (ids are stable: users suppress and search by them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from llmops_ci.errors import Problem

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    summary: str


_RULES = [
    # files and schema
    Rule("yaml-syntax", ERROR, "a YAML file does not parse (line and column of the first error)"),
    Rule("yaml-duplicate-key", ERROR, "a key appears twice in one mapping; YAML silently keeps the last"),
    Rule("unknown-key", ERROR, "a key that the file format does not have (with the closest valid key)"),
    Rule("wrong-type", ERROR, "a value of the wrong type or outside its allowed values"),
    Rule("missing-key", ERROR, "a required key is absent (e.g. a node without 'type' or 'source')"),
    Rule("path-missing", ERROR, "a path in llmops.yaml or run.yml does not exist"),
    Rule("path-outside", ERROR, "a path in llmops.yaml or run.yml that leads out of the project folder"),
    Rule("env-syntax", ERROR, "a malformed ${env:NAME} reference"),
    Rule("secret-literal", ERROR, "a literal credential in llmops.yaml, run.yml or flow.dag.yaml (never repeated)"),
    # flow interface
    Rule("input-type", ERROR, "a flow input or output type prompt flow does not know"),
    Rule("input-unused", WARNING, "a flow input that no node, activate condition or output reads"),
    Rule("output-ref-unknown", ERROR, "a flow output references a node or input that does not exist"),
    Rule("output-ref-aggregation", ERROR, "a flow output references an aggregation node"),
    # node graph
    Rule("node-ref-unknown", ERROR, "a node input or activate.when references an unknown node or flow input"),
    Rule("node-ref-aggregation", ERROR, "a non-aggregation node references an aggregation node"),
    Rule("node-cycle", ERROR, "nodes reference each other in a cycle (the cycle is named)"),
    Rule("node-duplicate", ERROR, "two nodes share a name"),
    Rule("node-type-unknown", ERROR, "a node type other than python, llm, prompt or custom_llm"),
    Rule("node-unused", WARNING, "a node whose output no other node, activate condition or output uses"),
    # python tools
    Rule("tool-file-missing", ERROR, "the Python file or prompt template of a node does not exist"),
    Rule("tool-syntax", ERROR, "a Python tool file does not parse"),
    Rule("tool-function", ERROR, "a Python tool file without exactly one @tool function"),
    Rule("tool-arg-unknown", ERROR, "a node input that the tool function has no parameter for"),
    Rule("tool-arg-missing", ERROR, "a tool parameter without a default that the node does not give"),
    Rule("package-tool-unchecked", WARNING,
         "a package tool that is not installed here, so its inputs were not checked"),
    # prompts
    Rule("prompt-syntax", ERROR, "a Jinja2 template does not parse"),
    Rule("prompt-var-unbound", ERROR, "a template variable that the node does not pass (it would render empty)"),
    Rule("prompt-input-unused", WARNING, "a node input that the template never uses"),
    # llm nodes and connections
    Rule("llm-connection-missing", ERROR, "an LLM node without 'connection'"),
    Rule("llm-model-missing", ERROR, "an LLM node that sets no 'model' (open_ai connection) or 'deployment_name' "
                                     "(azure_open_ai), so it sends an empty one"),
    Rule("llm-api-invalid", ERROR, "an LLM node whose 'api' is not chat or completion"),
    Rule("connection-undeclared", ERROR, "a connection used by a node (after config overrides) that llmops.yaml "
                                         "does not declare"),
    Rule("node-override-unknown", ERROR, "config 'connections:' names a node the flow does not have, or a key prompt "
                                         "flow cannot override on it"),
    # variants
    Rule("variant-default-unknown", ERROR, "default_variant_id names a variant that does not exist"),
    Rule("variant-mismatch", ERROR, "use_variants and node_variants disagree"),
    Rule("variant-unknown", ERROR, "the config's 'variant: ${node.variant}' names an unknown node or variant"),
    # files the flow needs
    Rule("include-missing", ERROR, "an additional_includes path does not exist"),
    Rule("requirements-missing", ERROR, "environment.python_requirements_txt does not exist"),
    # data and mappings
    Rule("data-missing", ERROR, "the data file does not exist"),
    Rule("data-parse", ERROR, "a data line that is not valid JSON (or a broken CSV); the line is named"),
    Rule("mapping-invalid", ERROR, "a column mapping value that is not ${data.x}, ${run.outputs.x}, "
                                   "${run.inputs.x} or a literal"),
    Rule("mapping-column-unknown", ERROR, "${data.col} in a column mapping names a column the data does not have"),
    Rule("mapping-input-unknown", WARNING, "a column mapping key that is not an input of the flow"),
    Rule("mapping-output-unknown", ERROR, "${run.outputs.x} in an evaluation mapping is not an output of the "
                                          "evaluated flow"),
    Rule("input-unmapped", ERROR, "a flow input without a default that is neither mapped nor a data column"),
    # gate
    Rule("score-output-unknown", ERROR, "an evaluation's 'scores:' names an output its flow does not have"),
    Rule("gate-unknown-evaluation", ERROR, "a gate rule names an evaluation (or run figure) that does not exist"),
    Rule("gate-rule-empty", ERROR, "a gate rule with no min, max, max_drop or max_rise"),
    # discovery
    Rule("flow-kind-unknown", ERROR, "a flow folder that no supported flow kind recognises"),
]

RULES: dict[str, Rule] = {r.id: r for r in _RULES}


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    path: str
    line: int | None
    column: int | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def sort_key(self) -> tuple[Any, ...]:
        return (self.path, self.line or 0, self.column or 0, self.rule, self.message)


def finding(rule: str, path: str, line: int | None, column: int | None, message: str) -> Finding:
    return Finding(rule, RULES[rule].severity, path, line, column, message)


def from_problem(problem: Problem) -> Finding:
    rule = problem.rule if problem.rule in RULES else "wrong-type"
    return finding(rule, problem.path, problem.line, problem.column, problem.message)
