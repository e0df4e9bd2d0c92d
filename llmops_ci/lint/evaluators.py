"""Lint of ``evaluator:``/``scorer:`` evaluations, ``parity:`` blocks and ``against:`` gate rules, from source only:
nothing here imports azure-ai-evaluation or mlflow (see ``llmops_ci.project.evaluators``)."""

from __future__ import annotations

from typing import Any

from llmops_ci.config import Config, Evaluation, FlowSpec
from llmops_ci.core.schema import closest
from llmops_ci.core.yamldoc import display_path
from llmops_ci.diagnostics.findings import ERROR, Finding, Rule, from_problem, rule_table
from llmops_ci.kinds.base import FlowInfo, FlowInput
from llmops_ci.project.evaluators import REFERENCE_PARAMS, Located, call_parameters, locate, model_connection

PARITY_METHODS = ("exact", "normalized")
RULES = rule_table(
    Rule("evaluator-unresolvable", ERROR, "an evaluation's evaluator:/scorer: module:attr is not installed or not "
                                          "found in its module's source"),
    Rule("evaluator-init-mismatch", ERROR, "an evaluator's init: key that its __init__ does not take, or a required "
                                           "one left out"),
    Rule("evaluator-param-unknown", ERROR, "an evaluator's column_mapping key that its __call__ does not take, or a "
                                           "required parameter left unmapped"),
    Rule("evaluator-connection-undeclared", ERROR, "an evaluator's model configuration names a connection llmops.yaml "
                                                   "does not declare (or one that is not an OpenAI/Azure OpenAI one)"),
    Rule("parity-flow-unknown", ERROR, "parity.of names a flow the config does not have (or the flow itself)"),
    Rule("parity-output-unknown", ERROR, "a parity.outputs pair names an output one of the two flows does not have"),
    Rule("parity-method-unknown", ERROR, "parity.method is not exact, normalized or an evaluation of the flow"),
    Rule("parity-data-differs", ERROR, "a flow and the flow its parity compares with read different data (lines are "
                                       "paired by data line)"),
    Rule("parity-name-taken", ERROR, "a flow with parity: also has an evaluation named 'parity', which the parity "
                                     "results would replace"),
    Rule("gate-against-invalid", ERROR, "a gate rule's against: names a flow that is not in the config or does not "
                                        "evaluate the same metric, or the rule has no relative limit"),
)


def evaluation_findings(config: Config, evaluation: Evaluation) -> tuple[list[Finding], Located | None]:
    """Findings of an ``evaluator:``/``scorer:`` evaluation, and what its source says (None: not found)."""
    origin = evaluation.origin
    key = "evaluator" if evaluation.evaluator else "scorer"
    out: list[Finding] = []
    if ":" not in (evaluation.ref or ""):
        return out, None  # the schema check says how to write it
    found = locate(evaluation.ref or "", (config.root,))
    if isinstance(found, str):
        out.append(from_problem(origin.problem((key,), f"{key}: {evaluation.ref}: {found}", "evaluator-unresolvable")))
        located = None
    else:
        located = found
        if evaluation.scorer and found.kind == "function" and "scorer" not in found.decorators:
            out.append(from_problem(origin.problem((key,), f"scorer: {evaluation.ref} is a plain function "
                                    f"({display_path(found.file)}:{found.line}); decorate it with @scorer "
                                    "(mlflow.genai.scorers) so MLflow calls it as a scorer", "evaluator-unresolvable")))
    if located is not None:
        out += _init(evaluation, located)
        out += _params(evaluation, located)
    out += _connection(config, evaluation)
    return out, located


def _init(evaluation: Evaluation, found: Located) -> list[Finding]:
    origin, out = evaluation.origin, []
    if found.kind != "class":
        if evaluation.init:
            out.append(from_problem(origin.problem(("init",), f"init: is for an evaluator class; {evaluation.ref} is a "
                                    f"{'function' if found.kind == 'function' else 'ready-made instance'}",
                                    "evaluator-init-mismatch", at_key=True)))
        return out
    params = found.init_params
    if params is None:
        return out  # inherited __init__: cannot tell statically
    for name in evaluation.init:
        if name not in params and not found.init_open:
            best = closest(str(name), params)
            out.append(from_problem(origin.problem(("init", name), f"init: '{name}' is not a parameter of "
                                    f"{evaluation.ref}.__init__ ({', '.join(params) or 'none'})"
                                    + (f"; did you mean '{best}'?" if best else ""), "evaluator-init-mismatch",
                                    at_key=True)))
    missing = [n for n, required in params.items() if required and n not in evaluation.init]
    if missing:
        example = " (e.g. model_config: {connection: <declared connection>, azure_deployment: <deployment>})" \
            if "model_config" in missing else ""
        out.append(from_problem(origin.problem(("init",) if evaluation.init else (), f"{evaluation.ref} requires "
                                f"{', '.join(missing)} under init:{example}", "evaluator-init-mismatch",
                                at_key=True)))
    return out


def _params(evaluation: Evaluation, found: Located) -> list[Finding]:
    params, open_ended = call_parameters(evaluation, found)
    if params is None:
        return []
    origin, out = evaluation.origin, []
    for name in evaluation.column_mapping:
        if name not in params and not open_ended:
            best = closest(str(name), params)
            out.append(from_problem(origin.problem(("column_mapping", name), f"column_mapping maps '{name}', which "
                                    f"{evaluation.ref} is not called with (it takes {', '.join(params) or 'nothing'})"
                                    + (f"; did you mean '{best}'?" if best else ""), "evaluator-param-unknown",
                                    at_key=True)))
    missing = [n for n, required in params.items() if required and n not in evaluation.column_mapping]
    if missing:
        out.append(from_problem(origin.problem(("column_mapping",) if evaluation.column_mapping else (),
                                f"{evaluation.ref} needs {', '.join(missing)}; map "
                                f"{'them' if len(missing) > 1 else 'it'} in column_mapping (e.g. {missing[0]}: "
                                "${run.outputs.<output>} or ${data.<column>})", "evaluator-param-unknown",
                                at_key=True)))
    return out


def _connection(config: Config, evaluation: Evaluation) -> list[Finding]:
    found = model_connection(evaluation.init)
    if found is None:
        return []
    key, name = found
    conn = config.connections.get(name)
    if conn is not None and conn.type in ("open_ai", "azure_open_ai"):
        return []
    if conn is not None:
        message = (f"init.{key}.connection '{name}' is a {conn.type} connection; a judge's model configuration needs "
                   "an open_ai or azure_open_ai one")
    else:
        best = closest(name, config.connections)
        message = (f"init.{key}.connection '{name}' is not declared under connections: in llmops.yaml"
                   + (f"; did you mean '{best}'?" if best else ""))
    return [from_problem(evaluation.origin.problem(("init", key, "connection"), message,
                                                   "evaluator-connection-undeclared"))]


def mapping_info(evaluation: Evaluation, located: Located | None, root: Any) -> FlowInfo:
    """What the shared column_mapping checks (data columns, base outputs) need: every mapped name an input (the
    parameters are checked above), so only the values are judged there."""
    info = FlowInfo(kind="scorer" if evaluation.scorer else "evaluator", folder=root,
                    definition=located.file if located is not None else root)
    info.inputs = {str(k): FlowInput(str(k), "object", True) for k in evaluation.column_mapping}
    return info


# --- parity and against ----------------------------------------------------------------------------------------

def parity_findings(config: Config, flow: FlowSpec, outputs: dict[str, FlowInfo | None]) -> list[Finding]:
    """``outputs``: each flow's inspected info (None when it could not be), for the output names."""
    spec = flow.parity
    if spec is None or spec.origin is None:
        return []
    origin, out = spec.origin, []
    other = config.flows.get(spec.of)
    if other is None or spec.of == flow.name:
        best = closest(spec.of, [n for n in config.flows if n != flow.name])
        out.append(from_problem(origin.problem(("of",), f"parity.of '{spec.of}' " + (
            "is this flow itself; name the flow it replaces" if spec.of == flow.name else
            "is not a flow of this config" + (f"; did you mean '{best}'?" if best else "")), "parity-flow-unknown")))
    if other is not None and other.name != flow.name and flow.data is not None and other.data is not None \
            and flow.data.resolve() != other.data.resolve():
        out.append(from_problem(origin.problem(("of",), f"flow '{flow.name}' reads {display_path(flow.data)} and "
                                f"'{other.name}' reads {display_path(other.data)}; parity pairs their lines by data "
                                "line, so both must read the same data file", "parity-data-differs")))
    if "parity" in flow.evaluations:
        taken = flow.evaluations["parity"].origin
        out.append(from_problem(taken.problem((), "this flow has parity:, whose results are the evaluation 'parity'; "
                                              "rename this evaluation", "parity-name-taken", at_key=True)))
    if not spec.outputs:
        out.append(from_problem(origin.problem(("outputs",), "parity.outputs is empty; pair at least one output "
                                "(this flow's output: the other flow's output)", "parity-output-unknown",
                                at_key=True)))
    for new, old in spec.outputs.items():
        for side, name, name_of in ((flow.name, new, flow.name), (spec.of, old, spec.of)):
            info = outputs.get(side)
            if info is None or info.outputs_open or not info.loaded:
                continue
            if name not in info.outputs:
                best = closest(name, info.outputs)
                out.append(from_problem(origin.problem(("outputs", new), f"parity.outputs: flow '{name_of}' has no "
                                        f"output '{name}'" + (f"; did you mean '{best}'?" if best else
                                                              f"; its outputs: {', '.join(sorted(info.outputs))}"),
                                        "parity-output-unknown", at_key=side == flow.name)))
    judges = [name for name, ev in flow.evaluations.items() if ev.ref]
    if spec.method not in PARITY_METHODS and spec.method not in judges:
        best = closest(spec.method, [*PARITY_METHODS, *judges])
        what = (f"'{spec.method}' is an evaluation flow; a judge is an evaluator:/scorer: evaluation"
                if spec.method in flow.evaluations else f"'{spec.method}' is not exact, normalized or an evaluator:/"
                f"scorer: evaluation of flow '{flow.name}'")
        out.append(from_problem(origin.problem(("method",), f"parity.method {what}"
                                + (f"; did you mean '{best}'?" if best else ""), "parity-method-unknown")))
    elif spec.method in judges:
        out += _judge(flow, flow.evaluations[spec.method], origin)
    return out


def _judge(flow: FlowSpec, evaluation: Evaluation, origin: Any) -> list[Finding]:
    """A parity judge needs a reference parameter (the other flow's answer goes there) and this flow's output."""
    found = locate(evaluation.ref or "", (flow.origin.doc.path.parent,))
    params = call_parameters(evaluation, found if isinstance(found, Located) else None)[0]
    kind = "scorer" if evaluation.scorer else "evaluator"
    if params is not None and not any(p in params for p in REFERENCE_PARAMS[kind]):
        return [from_problem(origin.problem(("method",), f"parity.method '{evaluation.name}': {evaluation.ref} takes "
                             f"no {' or '.join(REFERENCE_PARAMS[kind])} to give the other flow's answer to",
                             "parity-method-unknown"))]
    if not any(isinstance(v, str) and v.startswith("${run.outputs.") for v in evaluation.column_mapping.values()):
        return [from_problem(origin.problem(("method",), f"parity.method '{evaluation.name}' maps no "
                             "${run.outputs.<output>}: map its response parameter to this flow's output",
                             "parity-method-unknown"))]
    return []


def against_findings(config: Config, flow: FlowSpec) -> list[Finding]:
    out = []
    for metric, rule in flow.gate.items():
        if rule.against is None:
            continue
        sub = ("gate", metric, "against")
        source, _, _ = metric.partition(".")
        other = config.flows.get(rule.against)
        if other is None or rule.against == flow.name:
            best = closest(rule.against, [n for n in config.flows if n != flow.name])
            message = f"against: '{rule.against}' " + ("is this flow itself" if rule.against == flow.name else
                                                         "is not a flow of this config"
                                                         + (f"; did you mean '{best}'?" if best else ""))
        elif source != "run" and source != "parity" and source not in other.evaluations:
            message = (f"against: flow '{rule.against}' does not evaluate '{metric}' (it has no evaluation "
                       f"'{source}'); the comparison needs the same evaluation on both flows")
        elif source == "parity":
            message = "against: compares a metric of both flows; parity is already a comparison of the two"
        elif rule.max_drop is None and rule.max_rise is None:
            message = "against: needs a relative limit (max_drop or max_rise) to compare the two flows with"
        else:
            continue
        out.append(from_problem(flow.origin.problem(sub, message, "gate-against-invalid")))
    return out
