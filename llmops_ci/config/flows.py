"""A flow entry of llmops.yaml (or the run.yml it points at) built into a ``FlowSpec``, with the problems only the
whole entry shows (paths out of the project, a test without its limit)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_ci.config.deploy import deploy_spec
from llmops_ci.config.model import Evaluation, FlowSpec, GateRule, ParitySpec, RegisterSpec
from llmops_ci.config.paths import flow_dir, outside, outside_tree, rel
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


def _source(name: str, entry: dict[str, Any], written: dict[str, Any], doc: YamlDoc, root: Path,
            problems: list[Problem]) -> tuple[_Source | None, YamlDoc | None]:
    origin = Origin(doc, ("flows", name))
    run_file = rel(root, entry["run_file"]) if "run_file" in entry else None
    if run_file is None:
        if "path" not in written:  # a path the schema refused has been reported already
            problems.append(origin.problem((), f"flow '{name}' needs 'path:' (the flow's folder or file) "
                                           "or 'run_file:' (a prompt flow run.yml)", "missing-key", at_key=True))
            return None, None
        return _Source(entry, root, origin), None
    out = outside(root, origin, ("run_file",), run_file)
    if out:
        problems += out
        return None, None
    try:
        run_doc = load_yaml(run_file)
    except ConfigError as exc:
        problems += [p if p.rule != "path-missing" else origin.problem(
            ("run_file",), f"run_file '{entry['run_file']}' does not exist (paths are relative to "
            f"{doc.display})", "path-missing") for p in exc.problems]
        return None, None
    problems += run_doc.duplicates
    if not isinstance(run_doc.data, dict):
        problems.append(run_doc.problem((), "a run.yml must be a mapping with at least 'flow:'", "wrong-type"))
        return None, run_doc
    values = RUN_YML.check(run_doc, run_doc.data, (), problems)
    run_origin = Origin(run_doc, (), (("path", "flow"), ("base_run", "run")))
    return _Source(values, run_file.parent, run_origin, run_file, run_origin, run_doc), run_doc


def build_flow(name: str, entry: dict[str, Any], written: dict[str, Any], doc: YamlDoc,
               root: Path) -> tuple[FlowSpec | None, list[Problem], YamlDoc | None]:
    """The flow entry typed (None when its path is missing, broken or outside the project), every problem found,
    and the run.yml it names, loaded. ``entry`` is what the schema check handed back (every value of its declared
    type); ``written`` is the entry as written, asked only whether a key is there."""
    origin = Origin(doc, ("flows", name))
    problems: list[Problem] = []
    src, run_doc = _source(name, entry, written, doc, root, problems)
    if src is None:
        return None, problems, run_doc
    source = src.values
    path_key = "flow" if src.run_file is not None else "path"
    flow_path = flow_dir(rel(src.root, source[path_key])) if path_key in source else None
    if flow_path is None:  # refused by the schema check, which has said why
        return None, problems, run_doc
    out = outside(root, src.origin, ("path",), flow_path)
    if out:  # nothing outside the project is read, not even to lint it
        return None, problems + out, run_doc
    data_path = rel(src.root, source["data"]) if "data" in source else None
    if data_path is not None:
        problems += outside_tree(root, src.origin, ("data",), data_path)
    connections: dict[str, dict[str, Any]] = {}
    for layer in (source, entry) if src.run_file is not None else (entry,):
        for node, values in layer.get("connections", {}).items():
            connections.setdefault(str(node), {}).update(values)
    run_env = source.get("environment_variables", {})  # a run.yml may name a .env file instead
    env_vars = {**(run_env if isinstance(run_env, dict) else {}), **entry.get("environment_variables", {})}
    evaluations = _evaluations(name, entry, written, doc, root, problems)
    gate = _gate(entry, written, origin, problems)
    reg = entry.get("register")
    register = RegisterSpec(reg.get("name"), reg.get("description"), dict(reg.get("tags", {}))) \
        if reg is not None else None
    deploy, deploy_problems = deploy_spec(entry.get("deploy"), as_dict(written.get("deploy")), origin, root)
    problems += deploy_problems
    repeats = entry.get("repeats", 1)
    if not 1 <= repeats <= MAX_REPEATS:
        problems.append(origin.problem(("repeats",), f"repeats must be 1 to {MAX_REPEATS}", "wrong-type"))
    max_failed = entry.get("max_failed_lines", 0)
    if max_failed < 0:
        problems.append(origin.problem(("max_failed_lines",), "max_failed_lines must be 0 or more", "wrong-type"))
    # a variant of the wrong type written here hides the run.yml's, as it always has
    variant = entry.get("variant") if "variant" in written else source.get("variant")
    blocks = {}
    for block, kind in declared_kinds().items():
        spec = kind.declare(flow_path, entry.get(block), Origin(doc, ("flows", name, block)))
        if spec is not None:
            blocks[block] = spec
    run_yml = src.run_file is not None
    flow = FlowSpec(
        name=name, path=flow_path, data=data_path,
        column_mapping=dict(source.get("column_mapping", {})),
        variant=variant,
        connections=connections, environment_variables=env_vars,
        max_failed_lines=max(max_failed, 0),
        evaluations=evaluations, gate=gate, register=register, deploy=deploy, run_file=src.run_file,
        base_run=source.get("run") if run_yml else None,
        resources={**source.get("resources", {}), **entry.get("resources", {})}, origin=origin,
        run_origin=src.run_origin,
        init={**as_dict(source.get("init")), **entry.get("init", {})},
        parity=_parity_spec(entry.get("parity"), Origin(doc, ("flows", name, "parity"))),
        run_details={k: source[k] for k in RUN_DETAILS if run_yml and k in source},
        line_key=entry.get("line_key"),
        cluster=entry.get("cluster"),
        gate_family=entry["gate_family"] if entry.get("gate_family") in ("holm", "none") else "holm",
        repeats=repeats if 1 <= repeats <= MAX_REPEATS else 1,
        blocks=blocks)
    return flow, problems, run_doc


def _evaluations(name: str, entry: dict[str, Any], written: dict[str, Any], doc: YamlDoc, root: Path,
                 problems: list[Problem]) -> dict[str, Evaluation]:
    evaluations = {}
    written_evaluations = as_dict(written.get("evaluations"))
    for ename, eraw in entry.get("evaluations", {}).items():
        eval_origin = Origin(doc, ("flows", name, "evaluations", str(ename)))
        ref_eval = _ref_evaluation(str(ename), eraw, eval_origin, root)
        if ref_eval is not None:
            problems += ref_eval[1]
            evaluations[str(ename)] = ref_eval[0]
            continue
        if "path" not in as_dict(written_evaluations.get(ename)):  # a refused path has been reported already
            problems.append(eval_origin.problem(
                (), f"evaluation '{ename}' needs 'path:' (an evaluation flow), 'evaluator:' (module:Class, e.g. "
                "azure.ai.evaluation:F1ScoreEvaluator) or 'scorer:' (an MLflow 3 scorer)", "missing-key",
                at_key=True))
            continue
        eval_path = flow_dir(rel(root, eraw["path"])) if "path" in eraw else None
        if eval_path is None:
            continue
        eval_data = rel(root, eraw["data"]) if "data" in eraw else None
        out = outside(root, eval_origin, ("path",), eval_path)
        problems += out
        problems += outside_tree(root, eval_origin, ("data",), eval_data) if eval_data is not None else []
        if out:
            continue
        evaluations[str(ename)] = Evaluation(
            str(ename), eval_path, eval_data,
            dict(eraw.get("column_mapping", {})),
            {str(k): dict(v) for k, v in eraw.get("connections", {}).items()},
            dict(eraw.get("environment_variables", {})),
            eval_origin,
            {str(k): v for k, v in eraw.get("scores", {}).items()},
            dict(eraw.get("init", {})))
    return evaluations


def _num(value: int | float | None) -> float | None:
    return None if value is None else float(value)


def _gate(entry: dict[str, Any], written: dict[str, Any], origin: Origin,
          problems: list[Problem]) -> dict[str, GateRule]:
    gate = {}
    written_gate = as_dict(written.get("gate"))
    for metric, rule in entry.get("gate", {}).items():
        gate[str(metric)] = GateRule(str(metric), _num(rule.get("min")), _num(rule.get("max")),
                                     _num(rule.get("max_drop")), _num(rule.get("max_rise")),
                                     rule.get("significant") is True, rule.get("against"),
                                     test=rule["test"] if rule.get("test") == "non_inferiority" else None)
        # a limit of the wrong type has been reported already; the missing one is this rule's problem
        limits = as_dict(written_gate.get(metric))
        if rule.get("test") == "non_inferiority" and limits.get("max_drop") is None \
                and limits.get("max_rise") is None:
            problems.append(origin.problem(("gate", metric, "test"), "test: non_inferiority needs the limit "
                                           "it tests: add max_drop (or max_rise) to this rule", "missing-key"))
    return gate


def _ref_evaluation(name: str, raw: dict[str, Any], origin: Origin,
                    root: Path) -> tuple[Evaluation, list[Problem]] | None:
    """An ``evaluator:`` or ``scorer:`` evaluation (None for an evaluation flow). Its ``path`` is the config's
    folder, where a project's own evaluator modules are found."""
    if "evaluator" not in raw and "scorer" not in raw:
        return None
    problems: list[Problem] = []
    data = rel(root, raw["data"]) if "data" in raw else None
    if data is not None:
        problems += outside_tree(root, origin, ("data",), data)
    evaluation = Evaluation(
        name, root, data, dict(raw.get("column_mapping", {})), {}, dict(raw.get("environment_variables", {})),
        origin, dict(raw.get("scores", {})), dict(raw.get("init", {})),
        evaluator=raw.get("evaluator"), scorer=raw.get("scorer") if "evaluator" not in raw else None)
    return evaluation, problems


def _parity_spec(raw: dict[str, Any] | None, origin: Origin) -> ParitySpec | None:
    if raw is None or "of" not in raw:
        return None
    return ParitySpec(raw["of"], dict(raw.get("outputs", {})), raw.get("method", "exact"), origin)
