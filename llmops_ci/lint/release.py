"""Lint of what a release and a cloud run would do with a flow's settings, beyond the flow itself.

- ``deploy-env-connection-unused``: prompt flow serving resolves ``${connection.field}`` in environment variables
  only for the connections the flow references (its serving app builds the connection list from the flow), so
  a deployment variable naming another connection reaches the flow as that literal text.
- ``run-field-ignored``: the run.yml keys no run submits: ``name`` (every CI run needs a name of its own),
  ``properties`` (promptflow's ``Run._to_rest_object`` sends no user properties with a new run) and
  ``environment_variables`` given as a .env file path (promptflow's run loader would read it; we do not).
"""

from __future__ import annotations

from llmops_ci.config import Config, FlowSpec, connection_ref
from llmops_ci.diagnostics.findings import WARNING, Finding, Rule, from_problem, rule_table
from llmops_ci.diagnostics.origin import Origin
from llmops_ci.kinds.base import FlowInfo

RULES = rule_table(
    Rule("deploy-env-connection-unused", WARNING, "a deployment environment variable ${connection.field} naming a "
                                                  "connection no node of the flow uses: serving leaves it literal"),
    Rule("run-field-ignored", WARNING, "a run.yml key that no run submits (name, properties, a .env file as "
                                       "environment_variables)"),
)


def release_findings(config: Config, flow: FlowSpec, info: FlowInfo) -> list[Finding]:
    return [*_deploy_environment(flow, info), *_run_file(flow)]


def referenced_connections(flow: FlowSpec, info: FlowInfo) -> set[str]:
    """The connections the flow's nodes (after llmops.yaml's overrides) and a class entry's init name."""
    used = {use.connection for use in info.connections if use.connection}
    for node in flow.connections.values():
        if isinstance(node.get("connection"), str):
            used.add(node["connection"])
    for value in flow.init.values():
        if isinstance(value, dict) and isinstance(value.get("connection"), str):
            used.add(value["connection"])
    return used


def _deploy_environment(flow: FlowSpec, info: FlowInfo) -> list[Finding]:
    if flow.deploy is None or info.served_by != "promptflow":
        return []
    used = referenced_connections(flow, info)
    deploy = Origin(flow.origin.doc, (*flow.origin.prefix, "deploy"))
    out = []
    for origin, values in ((flow.where("environment_variables"), flow.environment_variables),
                           (deploy, flow.deploy.environment_variables)):
        for var, value in values.items():
            ref = connection_ref(value)
            if ref is None or ref[0] in used:
                continue
            out.append(from_problem(origin.problem(("environment_variables", var), (
                f"environment variable {var}: '{value}' names connection '{ref[0]}', which no node of flow "
                f"'{flow.name}' uses; prompt flow serving resolves only the connections a flow references, so the "
                f"deployment would see the literal text: use the connection in a node, or pass the value as "
                "${env:NAME}"), "deploy-env-connection-unused")))
    return out


def _run_file(flow: FlowSpec) -> list[Finding]:
    if flow.run_origin is None or not isinstance(flow.run_origin.doc.data, dict):
        return []
    data = flow.run_origin.doc.data
    why = {"name": "every CI run gets a name of its own (a run name is unique in a workspace); it is not used",
           "properties": "pfazure sends no user properties with a new run, and neither does llmops-ci; put what "
                         "should be searchable in tags:"}
    if isinstance(data.get("environment_variables"), str):
        why["environment_variables"] = ("a .env file is not read by llmops-ci (pfazure would load it), so the run "
                                        "gets none of its variables; write them as a mapping, secrets as "
                                        "${env:NAME}")
    return [from_problem(flow.run_origin.problem((key,), f"run.yml '{key}': {text}", "run-field-ignored",
                                                 at_key=True))
            for key, text in why.items() if key in data]
