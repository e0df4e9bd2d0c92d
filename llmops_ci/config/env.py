"""``${env:NAME}`` and ``${connection.field}`` references in llmops.yaml and run.yml."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from llmops_ci.config.model import Connection
from llmops_ci.config.schema import CONNECTION_FIELDS
from llmops_ci.core.child_env import ci_credential_refs, ci_token_message
from llmops_ci.core.errors import Problem
from llmops_ci.core.schema import as_dict
from llmops_ci.core.yamldoc import Key, YamlDoc

ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_START = re.compile(r"\$\{\s*env\s*:")


# --- ${env:NAME} ---------------------------------------------------------------------------------

def env_problems(doc: YamlDoc, environ: Mapping[str, str] | None) -> list[Problem]:
    """Malformed ``${env:...}`` everywhere; unset variables too unless ``environ`` is None (lint)."""
    out: list[Problem] = []

    def walk(value: Any, path: Key) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*path, i))
        elif isinstance(value, str) and "${" in value:
            stripped = ENV_REF.sub("", value)
            if _ENV_START.search(stripped):
                out.append(doc.problem(path, "malformed environment reference; write ${env:NAME} with NAME made "
                                       "of letters, digits and '_'", "env-syntax"))
            for name in ci_credential_refs(value):
                out.append(doc.problem(path, ci_token_message(name), "ci-token-ref"))
            if environ is not None:
                for name in ENV_REF.findall(value):
                    if name not in environ:
                        out.append(doc.problem(path, f"environment variable {name} is not set; export {name} "
                                               "(or set it as a CI secret/variable) and run again", "env-unset"))

    walk(doc.data, ())
    return out


def expand_env(value: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return ENV_REF.sub(lambda m: environ.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {k: expand_env(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, environ) for v in value]
    return value




# --- ${connection.field} in environment_variables (prompt flow resolves these from its connection store) ----------

_CONNECTION_REF = re.compile(r"^\$\{([^.{}:\s]+)\.([^{}\s]+)\}$")


def connection_ref(value: Any) -> tuple[str, str] | None:
    """``${my_conn.api_key}`` -> ("my_conn", "api_key"); None for anything else (``${env:X}`` included)."""
    m = _CONNECTION_REF.match(value.strip()) if isinstance(value, str) else None
    return (m.group(1), m.group(2)) if m else None


def connection_fields(conn: Connection) -> set[str]:
    """The fields ``${conn.field}`` can name: the type's fields, or a custom connection's configs and secrets."""
    if conn.type == "custom":
        return {str(k) for part in ("configs", "secrets") for k in as_dict(conn.values.get(part))}
    return set(CONNECTION_FIELDS.get(conn.type, ())) | {k for k in conn.values if k != "type"}


def connection_value(conn_values: dict[str, Any], conn_type: str, name: str) -> Any:
    if conn_type == "custom":
        for part in ("secrets", "configs"):
            if name in as_dict(conn_values.get(part)):
                return as_dict(conn_values.get(part))[name]
        return None
    return conn_values.get(name)
