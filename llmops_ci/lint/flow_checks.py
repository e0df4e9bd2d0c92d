"""The checks of one flow entry against its flow: init arguments, column mappings, connections, environment
variables, variants and gate rules (``FlowChecks``, the half of the project lint that reads no files)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from llmops_ci.config import RUN_FIGURES, Config, Connection, FlowSpec, connection_fields, connection_ref
from llmops_ci.core.schema import as_dict, closest
from llmops_ci.core.yamldoc import display_path
from llmops_ci.diagnostics.findings import Finding, finding, from_problem
from llmops_ci.diagnostics.origin import Origin
from llmops_ci.gate.keys import column
from llmops_ci.gate.stats import never_detectable
from llmops_ci.kinds.base import ConnectionUse, FlowInfo
from llmops_ci.kinds.flex import MODEL_CONFIGS, model_config_problems
from llmops_ci.project.data import DataInfo

_MAPPING_REF = re.compile(r"^\$\{([^}]*)\}$")
_PF_REFERENCE = re.compile(r"^\$\{([^{}]+)\}$")  # prompt flow's apply_inputs_mapping: anything else is a literal


def reference_meant(value: Any) -> str | None:
    """The reference a literal mapping value was meant to be, when it is one but for blanks around it, its closing
    brace or a blank after the '$' (``"${data.x"``, ``" ${data.x} "``, ``"$ {data.x}"``); None for any other value."""
    if not isinstance(value, str) or "$" not in value or _PF_REFERENCE.match(value):
        return None
    text = re.sub(r"^\$\s+\{", "${", value.strip())
    if text.startswith("${") and not text.endswith("}"):
        text += "}"
    return text if _PF_REFERENCE.match(text) and text.count("${") == 1 else None


class FlowChecks:
    findings: list[Finding]

    def init(self, given: dict[str, Any], origin: Origin, info: FlowInfo) -> None:
        """A run's ``init:`` against the class entry's ``__init__`` (prompt flow fails the whole run otherwise)."""
        params = info.init_params
        if params is None:
            if given:
                self.findings.append(from_problem(origin.problem(("init",), f"init: is for a flex flow whose entry is "
                                     f"a class; {display_path(info.definition)} takes no init arguments",
                                     "flex-init-mismatch", at_key=True)))
            return
        for name in given:
            if name not in params:
                best = closest(str(name), params)
                self.findings.append(from_problem(origin.problem(("init", name), f"init: '{name}' is not a parameter "
                                     f"of the entry's __init__ ({', '.join(params) or 'none'})"
                                     + (f"; did you mean '{best}'?" if best else ""), "flex-init-mismatch",
                                     at_key=True)))
        for name, value in given.items():  # a model configuration against its class's fields
            annotation = info.init_types.get(str(name))
            if annotation in MODEL_CONFIGS and isinstance(value, dict):
                for sub, rule, message in model_config_problems(annotation, str(name), value):
                    self.findings.append(from_problem(origin.problem(("init", name, *sub), message, rule,
                                                                     at_key=True)))
        missing = [name for name, required in params.items() if required and name not in given]
        if missing:
            self.findings.append(from_problem(origin.problem(("init",) if given else (), f"the entry's __init__ "
                                 f"requires {', '.join(missing)}; give them under init: (e.g. a model configuration "
                                 "with its connection)", "flex-init-mismatch", at_key=True)))

    def mapping(self, mapping: dict[str, Any], origin: Origin, sub: tuple[Any, ...], info: FlowInfo,
                data: DataInfo | None, base: FlowInfo | None, label: str) -> None:
        def add(rule: str, key: tuple[Any, ...], message: str, at_key: bool = False) -> None:
            self.findings.append(from_problem(origin.problem((*sub, *key), message, rule, at_key=at_key)))

        for name, value in mapping.items():
            if name not in info.inputs:
                best = closest(str(name), info.inputs)
                add("mapping-input-unknown", (name,), f"column_mapping maps '{name}', which is not an input of "
                    f"{display_path(info.definition)}" + (f"; did you mean '{best}'?" if best else ""), True)
            m = _MAPPING_REF.match(value) if isinstance(value, str) else None
            if m is None:
                meant = reference_meant(value)
                if meant:  # prompt flow takes it as a literal: every line would get this very text
                    add("mapping-invalid", (name,), f"'{value}' is not a reference but a literal every line gets "
                        "as it is (prompt flow reads only ${source.name} with nothing around it); did you mean "
                        f"'{meant}'?")
                continue  # a literal value
            source, _, rest = m.group(1).strip().partition(".")
            if source == "data":
                if not rest.strip():
                    add("mapping-invalid", (name,), f"'{value}': name the column, as in ${{data.<column>}}")
                    continue
                if data is None or not data.rows:  # an empty file is reported as such
                    continue
                if rest not in data.columns:
                    best = closest(rest, data.columns)
                    add("mapping-column-unknown", (name,), f"'{value}': the data {display_path(data.path)} has no "
                        f"column '{rest}'" + (f"; did you mean '{best}'?" if best else
                                              f"; its columns are: {', '.join(sorted(data.columns))}"))
                elif data.missing_in(rest):
                    add("mapping-column-unknown", (name,), f"'{value}': column '{rest}' is missing on "
                        f"{data.missing_in(rest)} of {data.rows} lines of {display_path(data.path)} (first: "
                        f"line {data.first_missing.get(rest)}); {missing_value(info, str(name))}")
            elif source == "run" and base is not None:
                part, _, field_name = rest.partition(".")
                names = base.outputs if part == "outputs" else set(base.inputs) if part == "inputs" else None
                if names is None or not field_name:
                    add("mapping-invalid", (name,), f"'{value}': write ${{run.outputs.<output>}} or "
                        "${run.inputs.<input>}")
                elif field_name.split(".")[0] not in names and not (part == "outputs" and base.outputs_open):
                    best = closest(field_name, names)
                    add("mapping-output-unknown", (name,), f"'{value}': the evaluated flow has no {part[:-1]} "
                        f"'{field_name}'" + (f"; did you mean '{best}'?" if best else
                                             f"; it has: {', '.join(sorted(names)) or 'none'}"))
            elif source == "run":
                add("mapping-invalid", (name,), f"'{value}': ${{run.*}} needs a base run; only evaluations "
                    "have one")
            else:
                add("mapping-invalid", (name,), f"'{value}': a column mapping value is ${{data.<column>}}"
                    + (", ${run.outputs.<output>}" if base else "") + " or a literal")
        if data is None or not data.rows:
            return
        shadowed = info.shadowed_defaults(mapping, data.columns)
        for name, spec in info.inputs.items():
            if name in shadowed:
                add("input-default-shadowed", (), f"{label}: flow input '{name}' has a default and "
                    f"{display_path(data.path)} has a '{name}' column, but column_mapping does not map it: prompt "
                    f"flow (and so llmops-ci) runs every line on the default, not on the column; add "
                    f"'{name}: ${{data.{name}}}' to column_mapping to run it on the column", True)
            if not spec.has_default and name not in mapping and name not in data.columns:
                add("input-unmapped", (), f"{label}: flow input '{name}' has no default, no column_mapping entry "
                    f"and no '{name}' column in {display_path(data.path)}; add '{name}: ${{data.<column>}}' to "
                    "column_mapping", True)

    def connections(self, config: Config, info: FlowInfo, overrides: dict[str, dict[str, Any]],
                    flow: FlowSpec | None, origin: Origin | None = None) -> None:
        def where(node: str) -> Origin:
            if flow is not None:
                return flow.where("connections", node)
            assert origin is not None
            return origin

        declared = config.connections
        # declared, but with a type lint already reports: "not declared" would mislead
        broken = {str(n) for n in as_dict(as_dict(config.doc.data).get("connections"))} - set(declared)
        fields = {(u.node, u.field) for u in info.connections}
        for node, values in overrides.items():
            if node not in info.nodes:
                best = closest(node, info.nodes)
                self.findings.append(from_problem(where(node).problem(
                    ("connections", node), f"connections: node '{node}' is not in "
                    f"{display_path(info.definition)}" + (f"; did you mean '{best}'?" if best else ""),
                    "node-override-unknown", at_key=True)))
                continue
            allowed = info.override_keys.get(node)
            for key in values:
                if allowed is not None and key not in allowed:
                    best = closest(str(key), allowed)
                    self.findings.append(from_problem(where(node).problem(
                        ("connections", node, key), f"connections: prompt flow cannot override '{key}' on node "
                        f"'{node}'" + (f"; did you mean '{best}'?" if best else "; it accepts: "
                                       + (", ".join(sorted(allowed)) or "nothing on this node")),
                        "node-override-unknown", at_key=True)))
            for key, value in values.items():
                if (key == "connection" or (node, key) in fields) and isinstance(value, str) \
                        and value not in declared and "${" not in value and value not in broken:
                    self.findings.append(from_problem(where(node).problem(
                        ("connections", node, key), self._undeclared(value, declared, config),
                        "connection-undeclared")))
        for use in info.connections:
            override = overrides.get(use.node, {})
            if use.llm and use.connection is None and "connection" not in override:
                self.findings.append(no_connection(use, config))
            if use.llm:
                self.model_setting(use, override, declared, where)
            if use.field in override:
                continue
            if use.connection and use.connection not in declared and "${" not in use.connection \
                    and use.connection not in broken:
                self.findings.append(finding("connection-undeclared", use.path, use.line, use.column,
                                             f"node '{use.node}': " + self._undeclared(use.connection, declared,
                                                                                       config)))

    def model_setting(self, use: ConnectionUse, override: dict[str, Any], declared: dict[str, Connection],
                      where: Callable[[str], Origin]) -> None:
        """An LLM node must name its model the way its connection type reads it, or it sends an empty one."""
        name = override.get("connection", use.connection)
        connection = declared.get(name) if isinstance(name, str) else None
        needed = {"open_ai": "model", "azure_open_ai": "deployment_name"}.get(connection.type if connection else "")
        if needed is None or needed in use.params or needed in override:
            return
        message = (f"node '{use.node}' uses {connection.type if connection else ''} connection '{name}' but sets no "
                   f"'{needed}', so the request goes out without one; add '{needed}: ...' to the node's inputs or to "
                   "its connections override")
        if "connection" in override:
            self.findings.append(from_problem(where(use.node).problem(("connections", use.node, "connection"),
                                                                      message, "llm-model-missing")))
        else:
            self.findings.append(finding("llm-model-missing", use.path, use.line, use.column, message))

    def environment(self, config: Config, values: dict[str, Any], origin: Origin, sub: tuple[Any, ...]) -> None:
        """``${connection.field}`` values: the connection must be declared and its type must have the field."""
        for var, value in values.items():
            ref = connection_ref(value)
            if ref is None:
                continue
            name, field_name = ref
            conn = config.connections.get(name)
            if conn is None:
                if name in as_dict(as_dict(config.doc.data).get("connections")):
                    continue  # declared with a broken type: that error is reported at the connection
                message = f"environment variable {var}: " + self._undeclared(name, config.connections, config)
            elif field_name not in connection_fields(conn):
                fields = sorted(connection_fields(conn))
                best = closest(field_name, fields)
                message = (f"environment variable {var}: connection '{name}' ({conn.type}) has no field "
                           f"'{field_name}'" + (f"; did you mean '{best}'?" if best else
                                               f"; it has: {', '.join(fields) or 'none'}"))
            else:
                continue
            self.findings.append(from_problem(origin.problem((*sub, var), message, "env-connection-unknown")))

    @staticmethod
    def _undeclared(name: str, declared: dict[str, Any], config: Config) -> str:
        best = closest(name, declared)
        return (f"connection '{name}' is not declared under 'connections:' in {config.doc.display}"
                + (f"; did you mean '{best}'?" if best else "; add it there (type, and secrets as ${env:NAME})"))

    def variant(self, flow: FlowSpec, info: FlowInfo) -> None:
        if flow.variant is None:
            return
        where = flow.where("variant")
        m = _MAPPING_REF.match(flow.variant)
        node, _, vid = (m.group(1).strip() if m else "").partition(".")
        if not m or not vid:
            message = f"variant '{flow.variant}' must be written ${{<node>.<variant_id>}}"
        elif node not in info.nodes:
            message = f"variant '{flow.variant}': the flow has no node '{node}'"
        elif node not in info.variants:
            message = f"variant '{flow.variant}': node '{node}' has no variants (no use_variants/node_variants)"
        elif vid not in info.variants[node]:
            best = closest(vid, info.variants[node])
            known = ", ".join(sorted(info.variants[node]))
            message = (f"variant '{flow.variant}': node '{node}' has no variant '{vid}'"
                       + (f"; did you mean '{best}'?" if best else f"; it has: {known}"))
        else:
            return
        self.findings.append(from_problem(where.problem(("variant",), message, "variant-unknown")))

    def gate(self, flow: FlowSpec) -> None:
        for metric, rule in flow.gate.items():
            sub = ("gate", metric)
            source, _, name = metric.partition(".")
            if source == "run":
                if name not in RUN_FIGURES:
                    best = closest(name, RUN_FIGURES)
                    self.findings.append(from_problem(flow.origin.problem(sub, f"gate rule '{metric}': the run has "
                                         f"no figure '{name}'" + (f"; did you mean 'run.{best}'?" if best else
                                         "; available: " + ", ".join("run." + f for f in RUN_FIGURES)),
                                         "gate-unknown-evaluation", at_key=True)))
            elif source not in flow.evaluations and not (source == "parity" and flow.parity is not None):
                best = closest(source, flow.evaluations)
                available = ", ".join(sorted(flow.evaluations)) or "none (add 'evaluations:' to the flow)"
                self.findings.append(from_problem(flow.origin.problem(sub, f"gate rule '{metric}': flow '{flow.name}' "
                                     f"has no evaluation '{source}'" + (f"; did you mean '{best}'?" if best else
                                                                        f"; its evaluations: {available}"),
                                     "gate-unknown-evaluation", at_key=True)))
            if rule.min is None and rule.max is None and rule.max_drop is None and rule.max_rise is None:
                self.findings.append(from_problem(flow.origin.problem(sub, f"gate rule '{metric}' sets no limit; "
                                     "give min, max, max_drop or max_rise", "gate-rule-empty", at_key=True)))


    def gate_power(self, flow: FlowSpec, data: DataInfo | None) -> None:
        """line_key:/cluster: name data columns; a data set too small to ever show a tested rule's limit."""
        if data is None or data.fatal or not data.rows:
            return
        for key in ("line_key", "cluster"):
            name = column(getattr(flow, key))
            if name and not data.columns.get(name):
                self.findings.append(from_problem(flow.origin.problem((key,), f"{key}: ${{data.{name}}} names a "
                                     f"column the data does not have; its columns: {', '.join(sorted(data.columns))}",
                                     "mapping-column-unknown")))
        tested = [(m, r) for m, r in flow.gate.items() if (r.significant or r.test) and (r.max_drop or r.max_rise)]
        family = len(tested) if flow.gate_family == "holm" else 1
        for metric, rule in tested:
            limit = rule.max_drop if rule.max_drop is not None else rule.max_rise
            why = never_detectable(data.rows, limit or 0.0, family)
            if why:
                self.findings.append(from_problem(flow.origin.problem(("gate", metric), f"gate rule '{metric}' can "
                                     f"never show its limit on this data: {why}; add data lines or widen the limit "
                                     "(the rule passes when nothing is shown, or never passes with test: "
                                     "non_inferiority)", "gate-underpowered", at_key=True)))


def missing_value(info: FlowInfo, name: str) -> str:
    """What becomes of a line that lacks a mapped column. Prompt flow reads data with pandas, which fills a missing
    value with NaN; a DAG flow's line then runs with it converted to the input's type (checked against pf.run)."""
    if info.missing_value == "absent":
        return "those lines get no value for it"
    if info.missing_value == "nan":
        return "prompt flow passes those lines NaN (what it reads for a missing value), without an error"
    declared = info.inputs[name].type if name in info.inputs else None
    if declared in ("int", "bool", "list"):
        return f"prompt flow fails those lines: NaN (what it reads for a missing value) is not {typed(declared)}"
    if declared in ("double", "object"):
        return "prompt flow runs those lines with NaN as the value, without an error"
    return "prompt flow runs those lines with the text 'nan' as the value, without an error"


def no_connection(use: ConnectionUse, config: Config | None = None) -> Finding:
    where = f" or give one in {config.doc.display} under the flow's connections: {{{use.node}: {{connection: ...}}}}" \
        if config is not None else ""
    return finding("llm-connection-missing", use.path, use.line, use.column, f"node '{use.node}' is an LLM node "
                   f"without 'connection'; name the connection it calls{where}")


def typed(value_type: str) -> str:
    return {"string": "a string", "object": "an object", "list": "a list"}.get(value_type, f"of type {value_type}")

