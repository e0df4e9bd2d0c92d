"""Lint a whole project: llmops.yaml, every flow it names, their data, mappings, connections and gates."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_ci.config import (
    RUN_FIGURES,
    Config,
    Connection,
    FlowSpec,
    connection_fields,
    connection_ref,
    inside_project,
    read_config,
)
from llmops_ci.core.errors import UsageError
from llmops_ci.core.safe_copy import links_out
from llmops_ci.core.schema import as_dict, closest, path_problem
from llmops_ci.core.yamldoc import YamlDoc, display_path
from llmops_ci.diagnostics import secrets
from llmops_ci.diagnostics.findings import ERROR, WARNING, Finding, finding, from_problem
from llmops_ci.diagnostics.origin import Origin
from llmops_ci.gate.keys import column
from llmops_ci.gate.stats import never_detectable
from llmops_ci.kinds import KINDS, kind_for
from llmops_ci.kinds.base import ConnectionUse, FlowInfo
from llmops_ci.kinds.flex import MODEL_CONFIGS, model_config_problems
from llmops_ci.lint import evaluators as evaluator_lint
from llmops_ci.lint.release import release_findings
from llmops_ci.project.data import DataInfo, read_data
from llmops_ci.project.loaded import Project

_MAPPING_REF = re.compile(r"^\$\{([^}]*)\}$")
# kinds whose runs take an input's default over a same-named data column (prompt flow's batch engine, checked on
# DAG flows against the executor): runs map such columns explicitly and lint says so
DEFAULTS_SHADOW_COLUMNS = frozenset({"dag"})
_SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", ".venv", "venv", ".tox", ".nox", "__pycache__", ".llmops",
              "site-packages", ".mypy_cache", ".ruff_cache", ".pytest_cache", "build", "dist"}


@dataclass(frozen=True)
class LintRequest:
    config: Path | None = None
    paths: tuple[Path, ...] = ()
    flows: tuple[str, ...] = ()


@dataclass
class LintReport:
    findings: list[Finding] = field(default_factory=list)
    flows_checked: int = 0
    evaluations_checked: int = 0  # with a config: its evaluations, counted apart from the flows it names

    @property
    def errors(self) -> int:
        return sum(f.severity == ERROR for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity == WARNING for f in self.findings)


def discover(root: Path) -> list[Path]:
    """Flow folders below ``root`` (any kind), skipping VCS, virtualenv and build folders."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        path = Path(dirpath)
        if kind_for(path) is not None:
            found.append(path)
        else:  # flow files side by side (several .prompty files, x.flex.yaml): each is a flow
            found += [path / name for name in sorted(filenames) if kind_for(path / name) is not None]
    return found


def lint(request: LintRequest, loaded: Project | None = None) -> LintReport:
    """Lint what ``request`` names; ``loaded`` is the project a step already loaded (its config and flows are
    reused, not read again)."""
    project = _Project(loaded)
    if loaded is not None:
        project.loaded_config(loaded.config, request.flows)
    elif request.config is not None:
        project.config(request.config, request.flows)
    else:
        paths = list(request.paths) or discover(Path.cwd())
        if not paths:
            raise UsageError(f"no flows found under {Path.cwd()}: pass flow folders, or --config llmops.yaml")
        for path in paths:
            if not path.exists():
                raise UsageError(f"{path}: no such file or folder")
            # a folder that is not a flow itself is searched, as `ruff check DIR` does
            below = discover(path) if path.is_dir() and kind_for(path) is None else [path]
            if not below:
                raise UsageError(f"{path}: no flows found in or below it (kinds: {', '.join(KINDS)})")
            for flow in below:
                info = project.flow_folder(flow)
                if info is not None and info.loaded:
                    project.without_config(info)
    counted = project.counted if project.counted is not None else (len(project.infos), 0)
    report = LintReport(sorted(set(project.findings), key=lambda f: f.sort_key), *counted)
    return report


class _Project:
    def __init__(self, loaded: Project | None = None) -> None:
        self.loaded = loaded
        self.findings: list[Finding] = []
        self.infos: dict[Path, FlowInfo] = {}
        self.counted: tuple[int, int] | None = None  # (flows, evaluations) the config selected
        self.data: dict[Path, DataInfo] = {}
        self.scanned: set[Path] = set()
        self.linked: set[Path] = set()

    def scan_secrets(self, docs: Iterable[YamlDoc]) -> None:
        for doc in docs:
            if doc.path not in self.scanned:
                self.scanned.add(doc.path)
                self.findings += secrets.scan(doc)
                if self.loaded is None or doc.path != self.loaded.config.doc.path:  # llmops.yaml: its loader says
                    self.findings += secrets.ci_token_refs(doc.path)

    def flow_folder(self, path: Path) -> FlowInfo | None:
        path = path.absolute()
        if path in self.infos:
            return self.infos[path]
        if self.loaded is not None:
            info = self.loaded.info(path)
        else:
            kind = kind_for(path)
            info = kind.inspect(path) if kind is not None else None
        if info is None:
            self.findings.append(finding("flow-kind-unknown", display_path(path), None, None,
                                         "not a flow: no supported flow kind recognises it (kinds: "
                                         + ", ".join(KINDS) + ")"))
            return None
        self.infos[path] = info
        self.findings += info.findings
        # a folder flow's files all reach it; a file flow (x.prompty, x.flex.yaml beside others) is that file
        whole = info.definition.name in ("flow.dag.yaml", "flow.flex.yaml") or not info.definition.is_file()
        self.findings += secrets.ci_token_refs(info.folder if whole else info.definition)
        return info

    def without_config(self, info: FlowInfo) -> None:
        """Checks that depend on the config, made as prompt flow would run the flow as it is."""
        for use in info.connections:
            if use.llm and use.connection is None:
                self.findings.append(_no_connection(use))

    def dataset(self, path: Path, origin: Origin, sub: tuple[Any, ...]) -> DataInfo | None:
        if path in self.data:
            return self.data[path]
        if not path.exists():
            self.findings.append(from_problem(origin.problem(sub, f"data '{display_path(path)}' does not exist",
                                                             "data-missing")))
            return None
        info = self.loaded.data(path) if self.loaded is not None else read_data(path)
        self.data[path] = info
        shown = display_path(path)
        if info.fatal:
            self.findings.append(finding("data-parse", shown, None, None, info.fatal))
            return None
        for line, message in info.errors:
            self.findings.append(finding("data-parse", shown, line, None, f"line {line} {message}"))
        if info.error_count > len(info.errors):
            line = info.errors[-1][0]
            self.findings.append(finding("data-parse", shown, line, None,
                                         f"{info.error_count - len(info.errors)} more bad lines after line {line}"))
        return info

    # -- config mode ---------------------------------------------------------------------------------
    def config(self, path: Path, names: tuple[str, ...]) -> None:
        if not path.is_file():
            raise UsageError(f"{path}: config file not found; pass --config PATH, or flow folders to lint "
                             "without a config")
        config, problems = read_config(path, environ=None)
        self.findings += [from_problem(p) for p in problems]
        if config is not None:
            self.loaded_config(config, names)

    def loaded_config(self, config: Config, names: tuple[str, ...]) -> None:
        if self.loaded is None:  # flows declared by their config entry are inspected through the project
            self.loaded = Project(config)
        self.scan_secrets([config.doc, *config.run_docs])
        selected = config.select(list(names))
        self.counted = (len(selected), sum(len(flow.evaluations) for flow in selected))
        for flow in selected:
            self.flow(config, flow)

    def flow(self, config: Config, flow: FlowSpec) -> None:
        where = flow.where("path")
        if not flow.path.exists():
            self.findings.append(from_problem(where.problem(("path",), f"flow folder '{display_path(flow.path)}' "
                                                            "does not exist", "path-missing")))
            return
        info = self.flow_folder(flow.path)
        if info is None or not info.loaded:
            return
        self.includes_inside(config, info)
        # data outside the project is an error of its own (path-outside) and is never read
        data = self.dataset(flow.data, flow.where("data"), ("data",)) \
            if flow.data and inside_project(config.root, flow.data) else None
        if flow.data is None:
            self.findings.append(from_problem(flow.where("path").problem(
                (), f"flow '{flow.name}' has no 'data:'; batch-run needs a data set", "missing-key", at_key=True)))
        self.mapping(flow.column_mapping, flow.where("column_mapping"), ("column_mapping",), info, data, None,
                     flow.name)
        self.connections(config, info, flow.connections, flow)
        self.environment(config, flow.environment_variables, flow.where("environment_variables"),
                         ("environment_variables",))
        self.variant(flow, info)
        self.init(flow.init, flow.where("init"), info)
        self.findings += release_findings(config, flow, info)
        for evaluation in flow.evaluations.values():
            self.evaluation(config, flow, info, data, evaluation)
        self.gate(flow)
        self.findings += evaluator_lint.against_findings(config, flow)
        if flow.parity is not None:
            other = config.flows.get(flow.parity.of)
            self.findings += evaluator_lint.parity_findings(config, flow, {
                flow.name: info, flow.parity.of: self._quiet_info(other.path) if other is not None else None})
        self.gate_power(flow, data)

    def _quiet_info(self, path: Path) -> FlowInfo | None:
        """Another flow's info for a cross-flow check; its own findings are reported where that flow is linted."""
        if self.loaded is not None:
            return self.loaded.info(path)
        kind = kind_for(path)
        return kind.inspect(path) if kind is not None else None

    def evaluation(self, config: Config, flow: FlowSpec, base: FlowInfo, base_data: DataInfo | None,
                   evaluation: Any) -> None:
        origin = evaluation.origin
        if evaluation.ref:  # an evaluator: or scorer: (lint/evaluators.py), not an evaluation flow
            found, located = evaluator_lint.evaluation_findings(config, evaluation)
            self.findings += found
            data = self.dataset(evaluation.data, origin, ("data",)) if evaluation.data is not None and \
                inside_project(config.root, evaluation.data) else base_data
            self.mapping(evaluation.column_mapping, origin, ("column_mapping",),
                         evaluator_lint.mapping_info(evaluation, located, config.root), data, base,
                         f"{flow.name}/{evaluation.name}")
            self.environment(config, evaluation.environment_variables, origin, ("environment_variables",))
            return
        if not evaluation.path.exists():
            self.findings.append(from_problem(origin.problem(("path",), f"evaluation flow "
                                 f"'{display_path(evaluation.path)}' does not exist", "path-missing")))
            return
        info = self.flow_folder(evaluation.path)
        if info is None or not info.loaded:
            return
        self.includes_inside(config, info)
        data = base_data
        if evaluation.data is not None:
            data = self.dataset(evaluation.data, origin, ("data",)) \
                if inside_project(config.root, evaluation.data) else None
        self.mapping(evaluation.column_mapping, origin, ("column_mapping",), info, data, base,
                     f"{flow.name}/{evaluation.name}")
        self.init(evaluation.init, origin, info)
        for metric, output in evaluation.scores.items():
            if output not in info.outputs and not info.outputs_open:
                best = closest(output, info.outputs)
                self.findings.append(from_problem(origin.problem(
                    ("scores", metric), f"scores: '{output}' is not an output of {display_path(info.definition)}"
                    + (f"; did you mean '{best}'?" if best else f"; it has: {', '.join(sorted(info.outputs))}"),
                    "score-output-unknown")))
            elif info.output_types.get(output) not in (None, "int", "double", "bool"):
                self.findings.append(from_problem(origin.problem(
                    ("scores", metric), f"scores: output '{output}' of {display_path(info.definition)} is "
                    f"{_typed(info.output_types[output])}, not a number or boolean, so no line could be scored; "
                    "name an output that holds the per-line score (e.g. 1.0 for correct, 0.0 for not)",
                    "score-output-type")))
        self.connections(config, info, evaluation.connections, None, origin)
        self.environment(config, evaluation.environment_variables, origin, ("environment_variables",))

    def includes_inside(self, config: Config, info: FlowInfo) -> None:
        """additional_includes, and links in the flow's folder, are copied into every run and model: they must not
        reach out of the project."""
        root = config.root.resolve()
        if info.folder not in self.linked:
            self.linked.add(info.folder)
            self.findings += [finding(p.rule, p.link, None, None, p.reason) for p in links_out(info.folder, root)]
        for dep in info.dependencies:
            if path_problem(str(dep.path)):
                continue
            try:
                dep.path.resolve().relative_to(root)
            except ValueError:
                self.findings.append(finding(
                    "path-outside", dep.source or display_path(info.definition), dep.line, dep.column,
                    f"{dep.label} '{dep.path}' leads out of the project folder {root} (the folder of "
                    f"{config.doc.display}); move what it needs inside the project"))
            except (OSError, RuntimeError):
                continue

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
                        f"line {data.first_missing.get(rest)}); {_missing_value(info, str(name))}")
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
        for name, spec in info.inputs.items():
            if info.kind in DEFAULTS_SHADOW_COLUMNS and spec.has_default and name not in mapping \
                    and name in data.columns:
                add("input-default-shadowed", (), f"{label}: flow input '{name}' has a default and "
                    f"{display_path(data.path)} has a '{name}' column, but column_mapping does not map it; runs map "
                    f"it to ${{data.{name}}} (prompt flow alone would use the default on every line): add "
                    f"'{name}: ${{data.{name}}}' to column_mapping to say so", True)
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
                self.findings.append(_no_connection(use, config))
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


def _missing_value(info: FlowInfo, name: str) -> str:
    """What becomes of a line that lacks a mapped column. Prompt flow reads data with pandas, which fills a missing
    value with NaN; a DAG flow's line then runs with it converted to the input's type (checked against pf.run)."""
    if info.kind not in ("dag", "flex") and not (info.kind == "prompty" and info.engine == "promptflow"):
        return "those lines get no value for it"
    if info.kind != "dag":
        return "prompt flow passes those lines NaN (what it reads for a missing value), without an error"
    declared = info.inputs[name].type if name in info.inputs else None
    if declared in ("int", "bool", "list"):
        return f"prompt flow fails those lines: NaN (what it reads for a missing value) is not {_typed(declared)}"
    if declared in ("double", "object"):
        return "prompt flow runs those lines with NaN as the value, without an error"
    return "prompt flow runs those lines with the text 'nan' as the value, without an error"


def _no_connection(use: ConnectionUse, config: Config | None = None) -> Finding:
    where = f" or give one in {config.doc.display} under the flow's connections: {{{use.node}: {{connection: ...}}}}" \
        if config is not None else ""
    return finding("llm-connection-missing", use.path, use.line, use.column, f"node '{use.node}' is an LLM node "
                   f"without 'connection'; name the connection it calls{where}")


def _typed(value_type: str) -> str:
    return {"string": "a string", "object": "an object", "list": "a list"}.get(value_type, f"of type {value_type}")
