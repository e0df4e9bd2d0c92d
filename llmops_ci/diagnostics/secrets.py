"""Literal credentials in YAML files, and references to the CI's own credentials. Messages name the key and
line, never the value."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from llmops_ci.core.child_env import ci_credential_refs, ci_token_message
from llmops_ci.core.yamldoc import Key, YamlDoc, display_path
from llmops_ci.diagnostics.findings import Finding, finding

_SECRET_KEY = re.compile(
    r"(?:^|[_-])(?:api[_-]?key|apikey|secret|client[_-]?secret|password|passwd|pwd|token|access[_-]?token|"
    r"auth[_-]?token|sas[_-]?token|connection[_-]?string|access[_-]?key|account[_-]?key|subscription[_-]?key|"
    r"ocp-apim-subscription-key)$",
    re.IGNORECASE,
)
_SECRET_VALUES = [
    ("an OpenAI-style key", re.compile(r"\bsk-(?:proj-|svcacct-)?[A-Za-z0-9_\-]{20,}")),
    ("a GitHub token", re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{30,}")),
    ("an Azure storage key", re.compile(r"AccountKey=[A-Za-z0-9+/=]{20,}")),
    ("a shared access signature", re.compile(r"[?&]sig=[A-Za-z0-9%+/=]{20,}")),
    ("an AWS access key", re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    ("a Slack token", re.compile(r"\bxox[abpr]-[A-Za-z0-9-]{10,}")),
    ("a JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.")),
]
_ENV_FX = re.compile(r"^=\s*Env\.[A-Za-z_][A-Za-z0-9_]*$")
_AZURE_KEY = re.compile(r"^[0-9a-fA-F]{32}$|^[A-Za-z0-9]{84}$")


def _placeholder(value: str) -> bool:
    v = value.strip()
    return (not v or "${" in v or (v.startswith("<") and v.endswith(">")) or set(v) <= {"*", "x", "X"}
            or v.lower() in {"none", "null", "changeme", "todo"}
            or _ENV_FX.match(v) is not None)  # Agent Framework's =Env.NAME reads a variable


def scan(doc: YamlDoc) -> list[Finding]:
    out: list[Finding] = []

    def report(path: Key, what: str) -> None:
        line, col = doc.pos(*path)
        name = next((str(p) for p in reversed(path) if isinstance(p, str)), "value")
        out.append(finding("secret-literal", doc.display, line, col,
                           f"'{name}' holds {what}; never commit credentials: remove it, rotate it, and write "
                           "${env:NAME} (set NAME as a CI secret)"))

    def walk(value: Any, path: Key, secret_context: bool) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*path, k), secret_context or str(k) == "secrets")
            return
        if isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*path, i), secret_context)
            return
        if not isinstance(value, str):
            return
        for what, pattern in _SECRET_VALUES:
            if pattern.search(value):
                report(path, what)
                return
        key = str(path[-1]) if path and isinstance(path[-1], str) else ""
        if (secret_context or _SECRET_KEY.search(key)) and not _placeholder(value):
            report(path, "a literal credential" if not _AZURE_KEY.match(value.strip()) else "an Azure key")

    walk(doc.data, (), False)
    return out


# files of a flow folder whose ${env:NAME} reaches the flow: its definition, prompty front matter, a run.yml,
# the yaml its entry reads (prompt flow resolves ${env:...} in all of them)
_FLOW_FILES = (".yaml", ".yml", ".prompty", ".env", ".json")
_SKIP_DIRS = {".git", "__pycache__", ".venv", "venv", "node_modules", ".llmops", ".promptflow"}
_MAX_FILES, _MAX_BYTES = 2000, 2 * 1024 * 1024


def ci_token_refs(path: Path) -> list[Finding]:
    """``${env:NAME}`` of a CI credential in ``path`` (a file, or a flow folder's files), each at its line."""
    files = [path] if path.is_file() else _flow_files(path)
    out: list[Finding] = []
    for file in files:
        try:
            if file.stat().st_size > _MAX_BYTES:
                continue
            text = file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if "${env:" not in text:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for name in dict.fromkeys(ci_credential_refs(line)):
                out.append(finding("ci-token-ref", display_path(file), number, line.find("${env:" + name) + 1,
                                   ci_token_message(name)))
    return out


def _flow_files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):  # never follows links: a link out is path-outside
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        found += [Path(dirpath) / n for n in sorted(filenames) if n.endswith(_FLOW_FILES)
                  and not (Path(dirpath) / n).is_symlink()]
        if len(found) > _MAX_FILES:
            break
    return found[:_MAX_FILES]
