"""The DAG file format: its schema, value types, node types, references, and the DAG kind's lint rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llmops_ci.core.schema import BOOL, STR, STR_MAP, AnyValue, ListOf, MapOf, Scalar, Struct
from llmops_ci.diagnostics.findings import ERROR, WARNING, Rule, rule_table

DAG_FILES = ("flow.dag.yaml", "flow.dag.yml")
NODE_TYPES = ("python", "llm", "prompt", "custom_llm")
VALUE_TYPES = ("string", "int", "double", "bool", "list", "object", "image", "file_path", "assistant_definition")
# Inputs an LLM node passes to the model rather than to its template.
LLM_PARAMS = frozenset({
    "deployment_name", "model", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop",
    "presence_penalty", "frequency_penalty", "logit_bias", "response_format", "n", "stream", "user", "suffix",
    "logprobs", "top_logprobs", "echo", "best_of", "seed", "tools", "tool_choice", "functions", "function_call",
    "detail", "connection",
})
_REF = re.compile(r"^\$\{([^}]*)\}$")
# what prompt flow's run-time `connections` override accepts (promptflow._sdk._constants)
LLM_OVERRIDES = frozenset({"connection", "deployment_name", "model"})
MODEL_OVERRIDES = frozenset({"deployment_name", "model"})
# the LLM providers prompt flow's builtin llm tool accepts (promptflow.tools: AzureOpenAI, OpenAI, Serverless)
LLM_PROVIDERS = ("AzureOpenAI", "OpenAI", "Serverless")
# the value type a Python return annotation gives a flow output
RETURN_TYPES = {"int": "int", "float": "double", "bool": "bool", "str": "string", "dict": "object",
                 "Dict": "object", "list": "list", "List": "list", "tuple": "list", "Tuple": "list", "None": "object"}

SOURCE = Struct({"type": Scalar((str,), choices=("code", "package", "package_with_prompt")), "path": STR,
                 "tool": STR}, required=("type",), what="in a node source")
ACTIVATE = Struct({"when": Scalar((str,), pattern=r"\$\{[^}]+\}", hint="; write ${<node>.output} or "
                                   "${inputs.<name>}"),
                   "is": AnyValue()}, required=("when", "is"), what="in activate")
_NODE_FIELDS = {
    "type": STR, "source": SOURCE, "inputs": MapOf(AnyValue()), "tool": STR, "comment": STR, "api": STR,
    "provider": STR, "module": STR, "connection": STR, "aggregation": BOOL, "enable_cache": BOOL,
    "activate": ACTIVATE,
}
NODE = Struct({"name": STR, "use_variants": BOOL, **_NODE_FIELDS}, required=("name",), what="in a node")
VARIANT = Struct({"node": Struct(_NODE_FIELDS, what="in a variant node"), "description": STR},
                 required=("node",), what="in a variant")
IO_TYPE = Scalar((str,))
DAG = Struct(
    {
        "$schema": STR, "id": STR, "name": STR, "display_name": STR, "description": STR, "tags": STR_MAP,
        "type": Scalar((str,), choices=("standard", "evaluation", "chat")), "language": STR,
        "message_format": STR,
        "inputs": MapOf(Struct({"type": IO_TYPE, "default": AnyValue(), "description": STR, "enum": ListOf(AnyValue()),
                                "is_chat_input": BOOL, "is_chat_history": BOOL}, required=("type",),
                               what="in a flow input")),
        "outputs": MapOf(Struct({"type": IO_TYPE, "reference": STR, "description": STR, "is_chat_output": BOOL,
                                 "evaluation_only": BOOL}, required=("type",), what="in a flow output")),
        "nodes": ListOf(NODE),
        "node_variants": MapOf(Struct({"default_variant_id": STR, "variants": MapOf(VARIANT)},
                                      required=("default_variant_id", "variants"), what="in node_variants")),
        "additional_includes": ListOf(STR),
        "environment": Struct({"python_requirements_txt": STR, "image": STR}, what="in environment"),
        "environment_variables": STR_MAP,
    },
    what="in flow.dag.yaml",
)


@dataclass(frozen=True)
class Ref:
    kind: str  # "input" or "node"
    name: str
    section: str = "output"


def parse_ref(value: Any) -> Ref | None:
    """``${inputs.x}`` / ``${flow.x}`` -> input; ``${node.output[.field]}`` -> node; anything else is a literal."""
    if not isinstance(value, str):
        return None
    m = _REF.match(value)
    if not m:
        return None
    body = m.group(1).strip()
    for prefix in ("inputs.", "flow."):
        if body.startswith(prefix):
            return Ref("input", body[len(prefix):])
    name, _, rest = body.partition(".")
    return Ref("node", name, rest.split(".", 1)[0] if rest else "output")



RULES = rule_table(
    Rule("input-unused", WARNING, "a flow input that no node, activate condition or output reads"),
    Rule("output-ref-unknown", ERROR, "a flow output references a node or input that does not exist"),
    Rule("output-ref-aggregation", ERROR, "a flow output references an aggregation node"),
    Rule("node-ref-unknown", ERROR, "a node input or activate.when references an unknown node or flow input"),
    Rule("node-ref-aggregation", ERROR, "a non-aggregation node references an aggregation node"),
    Rule("node-cycle", ERROR, "nodes reference each other in a cycle (the cycle is named)"),
    Rule("node-duplicate", ERROR, "two nodes share a name"),
    Rule("node-type-unknown", ERROR, "a node type other than python, llm, prompt or custom_llm"),
    Rule("node-unused", WARNING, "a node whose output no other node, activate condition or output uses"),
    Rule("tool-function", ERROR, "a Python tool file without exactly one @tool function"),
    Rule("tool-arg-unknown", ERROR, "a node input that the tool function has no parameter for"),
    Rule("tool-arg-missing", ERROR, "a tool parameter without a default that the node does not give"),
    Rule("package-tool-unchecked", WARNING,
         "a package tool that is not installed here, so its inputs were not checked"),
    Rule("prompt-input-unused", WARNING, "a node input that the template never uses"),
    Rule("llm-connection-missing", ERROR, "an LLM node without 'connection' (and no 'connections:' override "
                                          "in llmops.yaml that gives one)"),
    Rule("llm-api-invalid", ERROR, "an LLM node whose 'api' is not chat or completion"),
    Rule("llm-provider-unknown", ERROR, "an LLM node 'provider' prompt flow does not know"),
    Rule("activate-ref-line-node", ERROR, "an aggregation node's activate.when references a non-aggregation node"),
    Rule("variant-default-unknown", ERROR, "default_variant_id names a variant that does not exist"),
    Rule("variant-mismatch", ERROR, "use_variants and node_variants disagree"),
    Rule("include-missing", ERROR, "an additional_includes path does not exist"),
)
