"""A flow entry of llmops.yaml (or the run.yml it points at) built into a ``FlowSpec``, with the problems only the
whole entry shows (paths out of the project, a test without its limit)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_ci.config.deploy import deploy_spec
from llmops_ci.config.model import Evaluation, FlowSpec, GateRule, ParitySpec, RegisterSpec
from llmops_ci.config.paths import flow_dir, outside, rel
from llmops_ci.config.schema import MAX_REPEATS, RUN_DETAILS, RUN_YML
from llmops_ci.core.errors import ConfigError, Problem
from llmops_ci.core.schema import as_dict
from llmops_ci.core.yamldoc import YamlDoc, load_yaml
from llmops_ci.diagnostics.origin import Origin
from llmops_ci.kinds import declared_kinds


@dataclass
class _Source:
    """Where a flow's path, data and mapping are written: its llmops.yaml entry, or the run.yml it names."""

    values: dict[str, Any]
    root: Path
    origin: Origin
    run_file: Path | None = None
    run_origin: Origin | None = None
    run_doc: YamlDoc | None = None


def _source(name: str, raw: dict[str, Any], doc: YamlDoc, root: Path,
            problems: list[Problem]) -> tuple[_Source | None, YamlDoc | None]:
    origin = Origin(doc, ("flows", name))
    run_file = rel(root, raw.get("run_file"))
    if run_file is None:
        if "path" not in raw:
            problems.append(origin.problem((), f"flow '{name}' needs 'path:' (the flow's folder or file) "
                                           "or 'run_file:' (a prompt flow run.yml)", "missing-key", at_key=True))
            return None, None
        return _Source(raw, root, origin), None
    out = outside(root, origin, ("run_file",), run_file)
    if out:
        problems += out
        return None, None
    try:
        run_doc = load_yaml(run_file)
    except ConfigError as exc:
        problems += [p if p.rule != "path-missing" else origin.problem(
            ("run_file",), f"run_file '{raw['run_file']}' does not exist (paths are relative to "
            f"{doc.display})", "path-missing") for p in exc.problems]
        return None, None
    problems += run_doc.duplicates
    if not isinstance(run_doc.data, dict):
        problems.append(run_doc.problem((), "a run.yml must be a mapping with at least 'flow:'", "wrong-type"))
        return None, run_doc
    RUN_YML.check(run_doc, run_doc.data, (), problems)
    run_origin = Origin(run_doc, (), (("path", "flow"), ("base_run", "run")))
    return _Source(run_doc.data, run_file.parent, run_origin, run_file, run_origin, run_doc), run_doc


def build_flow(name: str, raw: dict[str, Any], doc: YamlDoc,
               root: Path) -> tuple[FlowSpec | None, list[Problem], YamlDoc | None]:
    """The flow entry ``raw`` typed (None when its path is missing, broken or outside the project), every problem
    found, and the run.yml it names, loaded."""
    origin = Origin(doc, ("flows", name))
    problems: list[Problem] = []
    src, run_doc = _source(name, raw, doc, root, problems)
    if src is None:
        return None, problems, run_doc
    source = src.values
    flow_path = flow_dir(rel(src.root, source.get("flow" if src.run_file is not None else "path")))
    if flow_path is None:  # not a string, or empty: the schema check has said so
        return None, problems, run_doc
    out = outside(root, src.origin, ("path",), flow_path)
    if out:  # nothing outside the project is read, not even to lint it
        return None, problems + out, run_doc
    data_path = rel(src.root, source.get("data"))
    if data_path is not None:
        problems += outside(root, src.origin, ("data",), data_path)
    connections: dict[str, dict[str, Any]] = {}
    for layer in (source.get("connections"), raw.get("connections")) if src.run_file is not None else (raw.get(
            "connections"),):
        for node, values in as_dict(layer).items():
            if isinstance(values, dict):
                connections.setdefault(str(node), {}).update(values)
    env_vars = dict(as_dict(source.get("environment_variables")))
    env_vars.update(as_dict(raw.get("environment_variables")))
    evaluations = _evaluations(name, raw, doc, root, problems)
    gate = _gate(raw, origin, problems)
    reg = raw.get("register")
    register = RegisterSpec(reg.get("name") if isinstance(reg.get("name"), str) else None,
                            reg.get("description"), dict(as_dict(reg.get("tags")))) if isinstance(reg, dict) else None
    deploy, deploy_problems = deploy_spec(raw.get("deploy"), origin, root)
    problems += deploy_problems
    repeats = raw.get("repeats", 1)
    if isinstance(repeats, int) and not isinstance(repeats, bool) and not 1 <= repeats <= MAX_REPEATS:
        problems.append(origin.problem(("repeats",), f"repeats must be 1 to {MAX_REPEATS}", "wrong-type"))
    max_failed = raw.get("max_failed_lines", 0)
    if isinstance(max_failed, int) and max_failed < 0:
        problems.append(origin.problem(("max_failed_lines",), "max_failed_lines must be 0 or more", "wrong-type"))
    variant = raw.get("variant", source.get("variant"))
    blocks = {}
    for block, kind in declared_kinds().items():
        spec = kind.declare(flow_path, raw.get(block), Origin(doc, ("flows", name, block)))
        if spec is not None:
            blocks[block] = spec
    flow = FlowSpec(
        name=name, path=flow_path, data=data_path,
        column_mapping=dict(as_dict(source.get("column_mapping"))),
        variant=variant if isinstance(variant, str) else None,
        connections=connections, environment_variables=env_vars,
        max_failed_lines=max_failed if isinstance(max_failed, int) and max_failed >= 0 else 0,
        evaluations=evaluations, gate=gate, register=register, deploy=deploy, run_file=src.run_file,
        base_run=source.get("run") if src.run_file is not None and isinstance(source.get("run"), str) else None,
        resources={**as_dict(source.get("resources")), **as_dict(raw.get("resources"))}, origin=origin,
        run_origin=src.run_origin,
        init={**as_dict(source.get("init")), **as_dict(raw.get("init"))},
        parity=_parity_spec(raw.get("parity"), Origin(doc, ("flows", name, "parity"))),
        run_details={k: source[k] for k in RUN_DETAILS if src.run_file is not None and k in source},
        line_key=raw["line_key"] if isinstance(raw.get("line_key"), str) else None,
        cluster=raw["cluster"] if isinstance(raw.get("cluster"), str) else None,
        gate_family=raw["gate_family"] if raw.get("gate_family") in ("holm", "none") else "holm",
        repeats=raw["repeats"] if isinstance(raw.get("repeats"), int) and 1 <= raw["repeats"] <= MAX_REPEATS else 1,
        blocks=blocks)
    return flow, problems, run_doc


def _evaluations(name: str, raw: dict[str, Any], doc: YamlDoc, root: Path,
                 problems: list[Problem]) -> dict[str, Evaluation]:
    evaluations = {}
    for ename, eraw in as_dict(raw.get("evaluations")).items():
        eval_origin = Origin(doc, ("flows", name, "evaluations", str(ename)))
        ref_eval = _ref_evaluation(str(ename), eraw, eval_origin, root)
        if ref_eval is not None:
            problems += ref_eval[1]
            evaluations[str(ename)] = ref_eval[0]
            continue
        if isinstance(eraw, dict) and "path" not in eraw:
            problems.append(eval_origin.problem(
                (), f"evaluation '{ename}' needs 'path:' (an evaluation flow), 'evaluator:' (module:Class, e.g. "
                "azure.ai.evaluation:F1ScoreEvaluator) or 'scorer:' (an MLflow 3 scorer)", "missing-key",
                at_key=True))
            continue
        eval_path = flow_dir(rel(root, eraw.get("path"))) if isinstance(eraw, dict) else None
        if eval_path is None:
            continue
        assert isinstance(eraw, dict)
        eval_data = rel(root, eraw.get("data"))
        out = outside(root, eval_origin, ("path",), eval_path)
        problems += out
        problems += outside(root, eval_origin, ("data",), eval_data) if eval_data is not None else []
        if out:
            continue
        evaluations[str(ename)] = Evaluation(
            str(ename), eval_path, eval_data,
            dict(as_dict(eraw.get("column_mapping"))),
            {str(k): dict(v) for k, v in as_dict(eraw.get("connections")).items() if isinstance(v, dict)},
            dict(as_dict(eraw.get("environment_variables"))),
            eval_origin,
            {str(k): v for k, v in as_dict(eraw.get("scores")).items() if isinstance(v, str)},
            dict(as_dict(eraw.get("init"))))
    return evaluations


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _gate(raw: dict[str, Any], origin: Origin, problems: list[Problem]) -> dict[str, GateRule]:
    gate = {}
    for metric, rule in as_dict(raw.get("gate")).items():
        if isinstance(rule, dict):
            gate[str(metric)] = GateRule(str(metric), _num(rule.get("min")), _num(rule.get("max")),
                                         _num(rule.get("max_drop")), _num(rule.get("max_rise")),
                                         rule.get("significant") is True,
                                         rule["against"] if isinstance(rule.get("against"), str) else None,
                                         test=rule["test"] if rule.get("test") == "non_inferiority" else None)
            if rule.get("test") == "non_inferiority" and rule.get("max_drop") is None \
                    and rule.get("max_rise") is None:
                problems.append(origin.problem(("gate", metric, "test"), "test: non_inferiority needs the limit "
                                               "it tests: add max_drop (or max_rise) to this rule", "missing-key"))
    return gate


def _ref_evaluation(name: str, raw: Any, origin: Origin, root: Path) -> tuple[Evaluation, list[Problem]] | None:
    """An ``evaluator:`` or ``scorer:`` evaluation (None for an evaluation flow). Its ``path`` is the config's
    folder, where a project's own evaluator modules are found."""
    if not isinstance(raw, dict) or not any(isinstance(raw.get(k), str) for k in ("evaluator", "scorer")):
        return None
    problems: list[Problem] = []
    data = rel(root, raw.get("data"))
    if data is not None:
        problems += outside(root, origin, ("data",), data)
    evaluation = Evaluation(
        name, root, data, dict(as_dict(raw.get("column_mapping"))), {}, dict(as_dict(raw.get("environment_variables"))),
        origin, {str(k): v for k, v in as_dict(raw.get("scores")).items() if isinstance(v, str)},
        dict(as_dict(raw.get("init"))),
        evaluator=raw["evaluator"] if isinstance(raw.get("evaluator"), str) else None,
        scorer=raw["scorer"] if isinstance(raw.get("scorer"), str) and not isinstance(raw.get("evaluator"), str)
        else None)
    return evaluation, problems


def _parity_spec(raw: Any, origin: Origin) -> ParitySpec | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("of"), str):
        return None
    outputs = {str(k): v for k, v in as_dict(raw.get("outputs")).items() if isinstance(v, str)}
    method = raw.get("method")
    return ParitySpec(raw["of"], outputs, method if isinstance(method, str) else "exact", origin)


