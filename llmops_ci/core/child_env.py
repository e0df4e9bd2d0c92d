"""The one environment every process that runs flow code gets: the caller's, without the CI's own credentials.

Flow code (and every package it imports) comes from the pull request under test. It needs its LLM keys
and, for an MLflow agent deployed to Databricks, ``DATABRICKS_*``; it never needs the token the CI
system hands the job (to comment, push, upload artifacts or mint cloud identity tokens). Every engine
builds its child's environment here: prompt flow's warm worker and runner, prompt flow serving, the
prompty 2.x loader (in-process, see ``scrubbed_os_environ``), the MLflow runner, MLflow serving,
``test`` and register's ``log_model`` child. See docs/security.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping

# Variables a CI system puts into a job's (or a task's) environment that carry a credential of the CI system itself,
# or the address to trade one for an identity token; and prefixes of such variables. Each CI platform registers its
# own (``llmops_ci.platforms`` does when its registry is built), with how to tell that a process runs on it.
CI_CREDENTIALS: set[str] = set()
CI_PREFIXES: list[str] = []
_RUNNERS: list[Callable[[Mapping[str, str]], bool]] = []
log = logging.getLogger("llmops_ci.child_env")
_warned: set[str] = set()
_MIN_VALUE = 8  # a shorter value ("true", a port) would drop unrelated variables that happen to contain it
ENV_NAME = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)")


def register_ci(credentials: Iterable[str], prefixes: Iterable[str],
                detected: Callable[[Mapping[str, str]], bool]) -> None:
    """A CI system's credential variables, their prefixes, and whether an environment is one of its jobs."""
    CI_CREDENTIALS.update(name.upper() for name in credentials)
    for prefix in prefixes:
        if prefix.upper() not in CI_PREFIXES:
            CI_PREFIXES.append(prefix.upper())
    if detected not in _RUNNERS:
        _RUNNERS.append(detected)


def is_ci_credential(name: str) -> bool:
    upper = name.upper()
    return upper in CI_CREDENTIALS or upper.startswith(tuple(CI_PREFIXES))


def ci_credential_refs(text: str) -> list[str]:
    """The CI credentials a text names as ``${env:NAME}`` (also prompty 2.x's ``${env:NAME:default}``)."""
    return [name for name in ENV_NAME.findall(text) if is_ci_credential(name)]


def ci_token_message(name: str) -> str:
    return (f"${{env:{name}}} is a credential of the CI system, which llmops-ci never hands to flow code; give "
            "the flow a secret of its own (an LLM key, DATABRICKS_TOKEN for an agent) and refer to that")


def child_environment(base: Mapping[str, str], extra: Mapping[str, str] | None = None,
                      drop: tuple[str, ...] = ()) -> dict[str, str]:
    """``base`` plus ``extra`` without the CI credentials and the names in ``drop``.

    A variable whose value carries a CI credential's value under another name (``FWD: ${env:GITHUB_TOKEN}``
    resolved somewhere upstream) is dropped too: the name is not what is secret, the value is.
    """
    if not _RUNNERS:  # fail closed: without the platforms' names nothing would be dropped, silently
        raise RuntimeError("llmops-ci: no CI platform has registered its credential names, so a child's environment "
                           "cannot be cleaned of them; import llmops_ci.platforms before starting a process that "
                           "runs flow code")
    secrets = [v for k, v in base.items() if is_ci_credential(k) and len(v.strip()) >= _MIN_VALUE]
    env = {k: v for k, v in base.items() if not is_ci_credential(k) and k not in drop}
    env.update(extra or {})
    return {k: v for k, v in env.items() if not is_ci_credential(k) and not any(s in v for s in secrets)}


@contextlib.contextmanager
def scrubbed_os_environ(overlay: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` as a child would see it, for code that reads it in-process (``prompty.load`` resolves
    ``${env:...}`` from it): ``overlay`` set, CI credentials removed; everything restored afterwards. The caller
    holds a lock: no other thread may rely on ``os.environ`` meanwhile."""
    wanted = child_environment(os.environ, overlay)
    saved = dict(os.environ)
    try:
        for k in [k for k in os.environ if k not in wanted]:
            del os.environ[k]
        os.environ.update(wanted)
        yield
    finally:
        for k in [k for k in os.environ if k not in saved]:
            del os.environ[k]
        os.environ.update(saved)


def warn_if_held(environ: Mapping[str, str]) -> None:
    """On a CI runner, say once when the step that runs flow code holds a CI credential itself: children never get
    it from us, but flow code can read it from ``/proc/<ppid>/environ`` of this process and of the step's shell."""
    if not any(detected(environ) for detected in _RUNNERS):
        return
    held = sorted(k for k, v in environ.items()
                  if v and is_ci_credential(k) and (k.upper() in CI_CREDENTIALS or "TOKEN" in k.upper()))
    if held and not set(held) <= _warned:
        _warned.update(held)
        log.warning("%s is in the environment of a step that runs flow code: llmops-ci never passes it to a flow, "
                    "but flow code can read it from this process's /proc entry; run flows in a step without it and "
                    "publish (comment, summary, outputs) in a separate step, as the action and the Azure Pipelines "
                    "template do (docs/security.md)", ", ".join(held))
