"""The two ``.prompty`` formats: their schemas, how a file's format is told, and the front matter split.

Prompt flow's (``promptflow.core.Prompty``) and the ``prompty`` 2.x package's (``prompty.load``).
A file that uses any key only 2.x has is meant for 2.x; anything else is prompt flow's format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_ci.core.errors import ConfigError, Problem
from llmops_ci.core.schema import BOOL, INT, NUM, STR, AnyValue, ListOf, MapOf, OneOf, Scalar, Spec, Struct, as_dict
from llmops_ci.core.yamldoc import Key, YamlDoc, display_path, parse_yaml

PROMPTFLOW = "promptflow"
PROMPTY2 = "prompty2"
FORMAT_NAMES = {PROMPTFLOW: "prompt flow's prompty format", PROMPTY2: "the prompty 2.x format"}
FLOW_FILES = ("flow.dag.yaml", "flow.dag.yml", "flow.flex.yaml", "flow.flex.yml")

VALUE_TYPES = ("string", "int", "double", "bool", "list", "object", "image", "file_path")
V2_KINDS = ("string", "integer", "float", "number", "boolean", "array", "object", "union", "thread", "image",
            "file", "audio")
V2_PROVIDERS = ("openai", "azure", "foundry", "anthropic")
# keyword arguments of openai's chat/completions create() that prompt flow passes `parameters` to
OPENAI_PARAMS = frozenset({
    "temperature", "max_tokens", "max_completion_tokens", "top_p", "n", "stream", "stream_options", "stop",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "user", "response_format",
    "seed", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call", "suffix", "echo",
    "best_of", "service_tier", "store", "metadata", "modalities", "audio", "prediction", "reasoning_effort",
    "web_search_options", "extra_headers", "extra_query", "extra_body", "timeout",
})
PF_CONFIG_KEYS = {
    "azure_openai": ("type", "connection", "azure_deployment", "azure_endpoint", "api_base", "api_version",
                     "api_key", "api_type", "auth_mode"),
    "openai": ("type", "connection", "model", "base_url", "api_key", "organization"),
}
PF_CONFIG_TYPES = {"azure_openai": "azure_openai", "AzureOpenAI": "azure_openai", "openai": "openai",
                    "OpenAI": "openai"}
PF_MODEL_KEY = {"azure_openai": "azure_deployment", "openai": "model"}

# -- prompt flow's format ------------------------------------------------------------------------------
PF_INPUT = Struct({"type": STR, "default": AnyValue(), "description": STR, "is_chat_input": BOOL,
                    "is_chat_history": BOOL, "enum": ListOf(AnyValue())}, what="in a prompty input")
PF_OUTPUT = Struct({"type": STR, "description": STR, "is_chat_output": BOOL}, what="in a prompty output")
PF_SCHEMA = Struct(
    {
        "$schema": STR, "name": STR, "description": STR, "version": AnyValue(), "authors": AnyValue(),
        "tags": AnyValue(),
        "model": Struct({"api": Scalar((str,), choices=("chat", "completion")), "configuration": AnyValue(),
                         "parameters": AnyValue(), "response": Scalar((str,), choices=("first", "all"))},
                        what="in model (prompt flow's prompty format)"),
        "inputs": MapOf(PF_INPUT), "outputs": MapOf(PF_OUTPUT),
        "sample": OneOf((MapOf(AnyValue()), STR), "a mapping of input values, or ${file:sample.json}"),
        "template": Scalar((str,), choices=("jinja2",)),
    },
    what="in a prompty front matter (prompt flow's format)",
)

# -- prompty 2.x --------------------------------------------------------------------------------------
KIND_SPEC = OneOf((STR, Struct({"kind": STR, "strict": BOOL, "options": AnyValue()})),
                   "a kind name (jinja2, mustache) or {kind: ...}")
V2_TEMPLATE = Struct({"format": KIND_SPEC, "parser": OneOf((STR, Struct({"kind": STR, "options": AnyValue()})),
                                                           "a parser name (prompty) or {kind: ...}")},
                      required=("format", "parser"), what="in template")
V2_OPTIONS = Struct({"frequencyPenalty": NUM, "maxOutputTokens": INT, "presencePenalty": NUM,
                      "reasoningEffort": AnyValue(), "seed": INT, "temperature": NUM, "topK": INT, "topP": NUM,
                      "stopSequences": ListOf(STR), "allowMultipleToolCalls": BOOL,
                      "additionalProperties": MapOf(AnyValue())}, what="in model.options")
CONN_COMMON = {"kind": STR, "authenticationMode": STR, "usageDescription": STR}
V2_CONNECTIONS: dict[str, Struct] = {
    kind: Struct({**CONN_COMMON, **{k: AnyValue() for k in keys}}, what=f"in a '{kind}' connection")
    for kind, keys in {
        "reference": ("name", "target"), "remote": ("name", "endpoint"), "key": ("endpoint", "apiKey"),
        "anonymous": ("endpoint",), "oauth": ("endpoint", "clientId", "clientSecret", "tokenUrl", "scopes"),
        "foundry": ("endpoint", "name", "connectionType"),
    }.items()
}
V2_PROPERTY_FIELDS: dict[str, Spec] = {
    "name": STR, "kind": STR, "description": STR, "required": BOOL, "nullable": BOOL, "default": AnyValue(),
    "example": AnyValue(), "enumValues": ListOf(AnyValue()), "items": AnyValue(), "properties": AnyValue(),
    "oneOf": AnyValue(), "anyOf": AnyValue(),
}
V2_SCHEMA = Struct(
    {
        "name": STR, "displayName": STR, "description": STR, "metadata": MapOf(AnyValue()), "inputs": AnyValue(),
        "outputs": AnyValue(), "model": AnyValue(), "tools": AnyValue(), "template": V2_TEMPLATE,
        "instructions": STR,
    },
    what="in a prompty front matter (prompty 2.x format)",
)
V2_MODEL = Struct({"id": STR, "provider": STR, "apiType": STR, "connection": AnyValue(), "options": V2_OPTIONS},
                   what="in model (prompty 2.x format)")
V2_TOP = ("displayName", "metadata", "tools", "instructions")
V2_MODEL_KEYS = ("id", "provider", "apiType", "options")
PF_MODEL_KEYS = ("api", "configuration", "parameters", "response")
# prompt flow key -> what prompty 2.x has instead
RENAMED = {
    ("model", "api"): "model.apiType (e.g. apiType: chat)",
    ("model", "configuration"): "model.provider, model.id and model.connection (e.g. provider: azure, id: "
                                "<deployment>, connection: {kind: key, endpoint: ${env:AZURE_OPENAI_ENDPOINT}, "
                                "apiKey: ${env:AZURE_OPENAI_API_KEY}})",
    ("model", "parameters"): "model.options with camelCase names (maxOutputTokens, topP, stopSequences, ...; "
                             "others under options.additionalProperties)",
    ("model", "response"): "nothing: 2.x always returns the first choice",
    ("sample",): "an 'example' or 'default' on each input",
    ("template",): "template: {format: {kind: jinja2}, parser: {kind: prompty}} (2.x refuses a bare string)",
}
V2_PARAM = {"max_tokens": "maxOutputTokens", "max_completion_tokens": "maxOutputTokens", "top_p": "topP",
             "stop": "stopSequences", "frequency_penalty": "frequencyPenalty", "presence_penalty": "presencePenalty",
             "temperature": "temperature", "seed": "seed", "reasoning_effort": "reasoningEffort"}
V2_KIND = {"string": "string", "int": "integer", "double": "float", "bool": "boolean", "list": "array",
            "object": "object"}
ENV_WHOLE = re.compile(r"^\$\{env:([A-Za-z_][A-Za-z0-9_]*)(:[^}]*)?\}$")
REF_START = re.compile(r"\$\{\s*(env|file)\s*:", re.IGNORECASE)
FILE_WHOLE = re.compile(r"^\$\{file:(.+)\}$")
SEPARATOR = re.compile(r"^\s*-{3,}\s*$")


@dataclass
class Parsed:
    doc: YamlDoc | None
    body: str
    body_line: int  # 1-based line of the body's first line in the file
    end_line: int  # the closing '---'


def split_front_matter(path: Path, text: str) -> Parsed:
    """Front matter (as a YamlDoc with the file's own line numbers) and body; ConfigError when there is none."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip()), None)
    if start is None or not SEPARATOR.match(lines[start]):
        raise ConfigError([Problem(display_path(path), 1, 1, "no front matter: a .prompty file starts with a "
                                   "YAML block between two '---' lines (name, model, inputs), then the template",
                                   "prompty-front-matter")])
    end = next((i for i in range(start + 1, len(lines)) if SEPARATOR.match(lines[i])), None)
    if end is None:
        raise ConfigError([Problem(display_path(path), start + 1, 1, "the front matter opened here is never closed; "
                                   "end it with a '---' line before the template", "prompty-front-matter")])
    # padding keeps YAML positions equal to the file's lines
    doc = parse_yaml("\n" * (start + 1) + "".join(lines[start + 1:end]), path)
    return Parsed(doc, "".join(lines[end + 1:]), end + 2, end + 1)


def detect_format(data: Any) -> tuple[str, list[Key], list[Key]]:
    """(format, keys only 2.x has, keys of prompt flow's format) for a parsed front matter."""
    data = as_dict(data)
    v2: list[Key] = [(k,) for k in V2_TOP if k in data]
    pf: list[Key] = [("sample",)] if "sample" in data else []
    model = data.get("model")
    if isinstance(model, str):
        v2.append(("model",))
    for k, v in as_dict(model).items():
        if k in V2_MODEL_KEYS or (k == "connection" and isinstance(v, dict)):
            v2.append(("model", k))
        elif k in PF_MODEL_KEYS:
            pf.append(("model", k))
    template = data.get("template")
    if isinstance(template, dict):
        v2.append(("template",))
    elif isinstance(template, str):
        pf.append(("template",))
    for section in ("inputs", "outputs"):
        value = data.get(section)
        if isinstance(value, list):
            v2.append((section,))
        named = {i: v for i, v in enumerate(value)} if isinstance(value, list) else as_dict(value)
        for name, spec in named.items():
            if isinstance(spec, dict) and "kind" in spec:
                v2.append((section, name, "kind"))
            if isinstance(spec, dict) and "type" in spec:
                pf.append((section, name, "type"))
    return (PROMPTY2 if v2 else PROMPTFLOW), v2, pf


def file_format(path: Path) -> str | None:
    """Which runtime a .prompty file is written for (PROMPTFLOW or PROMPTY2); None when it does not parse."""
    try:
        parsed = split_front_matter(path, path.read_text(encoding="utf-8-sig"))
    except (ConfigError, OSError, UnicodeDecodeError):
        return None
    return detect_format(parsed.doc.data if parsed.doc else None)[0]


