"""Secret redaction for everything llmops-ci prints or writes, in every process.

Each process knows the same secrets, without being told by another: the values of the CI tokens,
of environment variables whose names say they hold a credential, of the variables llmops.yaml reads
into a connection's secret fields, and whatever a run registers (resolved connection values). Text
that looks like a well-known credential format is redacted even when its value was never seen.
Redaction happens where bytes leave: log records, stdout/stderr, files in the state dir, cassettes,
the PR comment and the job summary.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llmops_ci.core.child_env import is_ci_credential

MASK = "***"
MIN_LENGTH = 6  # shorter values ("true", a port) would redact ordinary text
# Cloud credentials a job may hold under names no rule below matches; the CI system's own tokens are each
# platform's (``child_env.is_ci_credential``).
CLOUD_TOKENS = ("AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_SECRET")
_SECRET_NAME = re.compile(
    r"(?:^|[_-])(?:api[_-]?key|apikey|key|secret|client[_-]?secret|password|passwd|pwd|token|access[_-]?token|"
    r"auth[_-]?token|sas[_-]?token|sas|connection[_-]?string|access[_-]?key|account[_-]?key|subscription[_-]?key|"
    r"credentials?|pat)$", re.IGNORECASE)
# Well-known credential formats; a named group ``keep`` is a prefix that stays (``sig=``, ``Bearer ``).
_FORMATS = re.compile("|".join((
    r"\bsk-(?:proj-|svcacct-|ant-)?[A-Za-z0-9_\-]{20,}",
    r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{30,}",
    r"AccountKey=[A-Za-z0-9+/=]{20,}",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\bxox[abpr]-[A-Za-z0-9-]{10,}",
    r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*",
    r"\bdapi[0-9a-f]{32}\b",
)))
_PREFIXED = re.compile(r"(?P<keep>(?i:\bbearer\s+|[?&](?:sig|api[_-]?key|key|token|access_token|code)=))"
                       r"[A-Za-z0-9._~+/=%-]{8,}")


_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


def add(value: object) -> None:
    """Treat ``value`` as a secret from now on, in this process."""
    global _pattern
    if not isinstance(value, str):
        return
    value = value.strip()
    if len(value) < MIN_LENGTH or value in _values:
        return
    with _lock:
        _values.add(value)
        ordered = sorted(_values, key=len, reverse=True)  # a longer secret first: it may contain a shorter one
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))


def add_all(values: Iterable[object]) -> None:
    for value in values:
        add(value)


# named like a credential ("pwd": password) but the shell's working directories: masking them would mangle every
# path below the checkout in what we write (a base run's data path, messages)
NOT_SECRETS = ("PWD", "OLDPWD")


def is_secret_name(name: str) -> bool:
    if name.upper() in NOT_SECRETS:
        return False
    return name.upper() in CLOUD_TOKENS or is_ci_credential(name) or bool(_SECRET_NAME.search(name))


def from_environment(environ: Mapping[str, str], secret_names: Iterable[str] = ()) -> None:
    """The CI tokens, variables named like credentials, and ``secret_names`` (read into secret fields)."""
    wanted = set(secret_names)
    for name, value in environ.items():
        if name in wanted or is_secret_name(name):
            add(value)


def redact(text: str) -> str:
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _FORMATS.sub(MASK, text)
    return _PREFIXED.sub(lambda m: m.group("keep") + MASK, text)


def redact_data(value: Any) -> Any:
    """``value`` (JSON-like) with every string redacted, keys included."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_data(k): redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v) for v in value]
    return value


def reset() -> None:
    """Forget every registered value (tests)."""
    global _pattern
    with _lock:
        _values.clear()
        _pattern = None


def redact_files(folder: Path, limit: int = 64 * 1024 * 1024) -> None:
    """Rewrite the text files under ``folder`` (an executor's run records, a process log) without secrets."""
    if _pattern is None or not folder.exists():
        return
    for path in [folder] if folder.is_file() else sorted(folder.rglob("*")):
        try:
            if not path.is_file() or path.is_symlink() or path.stat().st_size > limit:
                continue
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # binary (sqlite, a keyring) or gone
        clean = redact(text)
        if clean != text:
            path.write_text(clean, encoding="utf-8")
