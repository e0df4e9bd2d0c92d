"""Lint findings and the catalogue of rules (ids are stable: users suppress and search by them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from llmops_ci.core.errors import Problem

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    summary: str


RULES: dict[str, Rule] = {}


def register_rules(rules: Iterable[Rule]) -> None:
    """Rules join the catalogue (ids are global: a clash is a bug)."""
    for rule in rules:
        if RULES.get(rule.id, rule) != rule:
            raise ValueError(f"lint rule id {rule.id} is registered twice with different meanings")
        RULES[rule.id] = rule


def rule_table(*rules: Rule) -> dict[str, Rule]:
    """A module's lint rules by id, joined to the catalogue: the one way every rule table is declared (this module's,
    each kind's, lint's)."""
    table = {r.id: r for r in rules}
    if len(table) != len(rules):
        raise ValueError("a rule table declares an id twice")
    register_rules(table.values())
    return table


_RULES = rule_table(
    # files and schema
    Rule("yaml-syntax", ERROR, "a YAML file does not parse (line and column of the first error)"),
    Rule("yaml-duplicate-key", ERROR, "a key appears twice in one mapping; YAML silently keeps the last"),
    Rule("unknown-key", ERROR, "a key that the file format does not have (with the closest valid key)"),
    Rule("wrong-type", ERROR, "a value of the wrong type or outside its allowed values"),
    Rule("missing-key", ERROR, "a required key is absent (e.g. a node without 'type' or 'source')"),
    Rule("path-missing", ERROR, "a path in llmops.yaml or run.yml does not exist"),
    Rule("path-outside", ERROR, "a path in llmops.yaml or run.yml, or a link in a flow's folder, that leads out of "
                                "the project folder"),
    Rule("link-loop", ERROR, "a link in a flow's folder that leads back into a folder containing it"),
    Rule("env-syntax", ERROR, "a malformed ${env:NAME} reference"),
    Rule("ci-token-ref", ERROR, "${env:NAME} of a CI credential (GITHUB_TOKEN, ACTIONS_*, SYSTEM_ACCESSTOKEN, ...) "
                                "in llmops.yaml, run.yml or a flow's files: flows never get the CI's own token"),
    Rule("secret-literal", ERROR, "a literal credential in llmops.yaml, run.yml or flow.dag.yaml (never repeated)"),
    # flow interface
    Rule("input-type", ERROR, "a flow input or output type prompt flow does not know"),
    # node graph
    # python tools
    Rule("tool-file-missing", ERROR, "the Python file or prompt template of a node does not exist"),
    Rule("tool-syntax", ERROR, "a Python tool file does not parse"),
    # prompts
    Rule("prompt-syntax", ERROR, "a Jinja2 template does not parse"),
    Rule("prompt-var-unbound", ERROR, "a template variable that the node does not pass (it would render empty)"),
    # llm nodes and connections
    Rule("llm-model-missing", ERROR, "an LLM node that sets no 'model' (open_ai connection) or 'deployment_name' "
                                     "(azure_open_ai), so it sends an empty one"),
    Rule("connection-undeclared", ERROR, "a connection used by a node (after config overrides) that llmops.yaml "
                                         "does not declare"),
    Rule("node-override-unknown", ERROR, "config 'connections:' names a node the flow does not have, or a key prompt "
                                         "flow cannot override on it"),
    # variants
    Rule("variant-unknown", ERROR, "the config's 'variant: ${node.variant}' names an unknown node or variant"),
    # files the flow needs
    Rule("requirements-missing", ERROR, "environment.python_requirements_txt does not exist"),
    # data and mappings
    Rule("data-missing", ERROR, "the data file does not exist"),
    Rule("data-parse", ERROR, "a data line that is not valid JSON (or a broken CSV); the line is named"),
    Rule("mapping-invalid", ERROR, "a column mapping value that is not ${data.x}, ${run.outputs.x}, "
                                   "${run.inputs.x} or a literal"),
    Rule("mapping-column-unknown", ERROR, "${data.col} in a column mapping names a column the data does not have"),
    Rule("mapping-input-unknown", WARNING, "a column mapping key that is not an input of the flow"),
    Rule("data-line-number", ERROR, "a data column named line_number with a repeated, missing or non-integer value "
                                    "(prompt flow keys the lines by it and merges repeats)"),
    Rule("evaluation-data-misaligned", ERROR, "an evaluation's own data has not as many lines as the flow's data "
                                              "(prompt flow fails such an evaluation as a whole)"),
    Rule("mapping-output-unknown", ERROR, "${run.outputs.x} in an evaluation mapping is not an output of the "
                                          "evaluated flow"),
    Rule("input-unmapped", ERROR, "a flow input without a default that is neither mapped nor a data column"),
    Rule("input-default-shadowed", WARNING, "an input with a default and a same-named data column but no mapping "
                                            "(prompt flow, and so every run, uses the default on every line)"),
    Rule("env-connection-unknown", ERROR, "${connection.field} in environment_variables names a connection "
                                          "llmops.yaml does not declare, or a field its type lacks"),
    # gate
    Rule("score-output-unknown", ERROR, "an evaluation's 'scores:' names an output its flow does not have"),
    Rule("score-output-type", ERROR, "an evaluation's 'scores:' output is not a number or boolean (an object, a "
                                     "label string), so no line could be scored"),
    Rule("gate-unknown-evaluation", ERROR, "a gate rule names an evaluation (or run figure) that does not exist"),
    Rule("gate-rule-empty", ERROR, "a gate rule with no min, max, max_drop or max_rise"),
    Rule("gate-underpowered", WARNING, "the data has too few lines to ever show a significance-tested rule's limit "
         "(see docs/gate.md)"),
    # discovery
    Rule("flow-kind-unknown", ERROR, "a flow folder that no supported flow kind recognises"),
)



_SOURCES: list[Callable[[], list[Rule]]] = []


def add_rule_source(source: Callable[[], list[Rule]]) -> None:
    """``source`` gives rules that join the catalogue when it is read (the kinds registry's: a kind may be added
    after import)."""
    _SOURCES.append(source)


def rule(rule_id: str) -> Rule:
    """The rule with this id; a kind added to ``KINDS`` brings its rules along the first time one is asked for."""
    if rule_id not in RULES:
        for source in _SOURCES:
            register_rules(source())
    return RULES[rule_id]


def all_rules() -> dict[str, Rule]:
    for source in _SOURCES:
        register_rules(source())
    return RULES


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


def finding(rule_id: str, path: str, line: int | None, column: int | None, message: str) -> Finding:
    return Finding(rule_id, rule(rule_id).severity, path, line, column, message)


def from_problem(problem: Problem) -> Finding:
    try:
        rule_id = rule(problem.rule).id
    except KeyError:
        rule_id = "wrong-type"
    return finding(rule_id, problem.path, problem.line, problem.column, problem.message)
