"""Lint a whole project: llmops.yaml, every flow it names, their data, mappings, connections and gates."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_ci.config import (
    Config,
    FlowSpec,
    inside_project,
    not_a_config,
    read_config,
)
from llmops_ci.core.errors import ConfigError, Problem, UsageError
from llmops_ci.core.safe_copy import links_out
from llmops_ci.core.schema import closest, path_problem
from llmops_ci.core.yamldoc import YamlDoc, display_path
from llmops_ci.diagnostics import secrets
from llmops_ci.diagnostics.findings import ERROR, WARNING, Finding, finding, from_problem
from llmops_ci.diagnostics.origin import Origin
from llmops_ci.kinds import KINDS, kind_for
from llmops_ci.kinds.base import FlowInfo
from llmops_ci.lint import evaluators as evaluator_lint
from llmops_ci.lint.flow_checks import FlowChecks, no_connection, typed
from llmops_ci.lint.release import release_findings
from llmops_ci.project.data import LINE_NUMBER, DataInfo, read_data
from llmops_ci.project.discover import discover
from llmops_ci.project.loaded import Project


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


def preflight(project: Project, flows: list[FlowSpec]) -> None:
    """Everything lint can tell before a run: a broken mapping or flow is exit 2 before anything starts."""
    report = lint(LintRequest(config=project.config.path, flows=tuple(f.name for f in flows)), project)
    errors = [f for f in report.findings if f.severity == ERROR]
    if errors:
        raise ConfigError([Problem(f.path, f.line, f.column, f"{f.message} [{f.rule}]", f.rule) for f in errors])


class _Project(FlowChecks):
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
                self.findings.append(no_connection(use))

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
        if info.line_number_problem is not None:
            line, what = info.line_number_problem
            self.findings.append(finding(
                "data-line-number", shown, line, None, f"line {line} has {what}: prompt flow takes a 'line_number' "
                "column as each line's own number and keys the lines by it, so lines with the same number are "
                "merged into one (the run has fewer lines than the data, silently); rename the column (or number "
                "every line once)"))
        if info.error_count > len(info.errors):
            line = info.errors[-1][0]
            self.findings.append(finding("data-parse", shown, line, None,
                                         f"{info.error_count - len(info.errors)} more bad lines after line {line}"))
        return info

    # -- config mode ---------------------------------------------------------------------------------
    def config(self, path: Path, names: tuple[str, ...]) -> None:
        if not path.is_file():
            raise UsageError(f"{path}: {not_a_config(path)}; pass --config PATH, or flow folders to lint "
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
            self.lines_pair(origin, base_data, data)
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
            self.lines_pair(origin, base_data, data)
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
                    f"{typed(info.output_types[output])}, not a number or boolean, so no line could be scored; "
                    "name an output that holds the per-line score (e.g. 1.0 for correct, 0.0 for not)",
                    "score-output-type")))
        self.connections(config, info, evaluation.connections, None, origin)
        self.environment(config, evaluation.environment_variables, origin, ("environment_variables",))

    def lines_pair(self, origin: Origin, base: DataInfo | None, own: DataInfo | None) -> None:
        """An evaluation's own data is paired with its base run line by line: prompt flow refuses the run as a whole
        ("Line numbers are not aligned") when the counts differ and neither file numbers its lines."""
        if base is None or own is None or own is base or base.rows == own.rows or not base.rows or not own.rows \
                or LINE_NUMBER in base.columns or LINE_NUMBER in own.columns:
            return
        self.findings.append(from_problem(origin.problem(
            ("data",), f"'{display_path(own.path)}' has {own.rows} line(s) and the flow's data "
            f"'{display_path(base.path)}' {base.rows}: prompt flow pairs an evaluation's data with the run it scores "
            "line by line and fails the evaluation as a whole when the counts differ; give it one line per line of "
            "the flow's data, in the same order (or leave out 'data:' to use the flow's)",
            "evaluation-data-misaligned")))

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
