"""The action's first step, before llmops-ci is installed: refuse unsafe events, check the inputs that
the install needs, and name the venv, its cache key, the baseline scope and the artifact.

Runs on the bare setup-python interpreter with the action's folder on PYTHONPATH: stdlib only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

from llmops_ci.ci.hosts import Host
from llmops_ci.ci.plan import InputError, read_inputs

EXTRAS = re.compile(r"[A-Za-z0-9_., -]*")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prepare(environ: Mapping[str, str], host: Host) -> int:
    refusal = host.refusal()
    if refusal:
        host.message("error", refusal)
        return 2
    inputs = read_inputs(environ, host)  # a bad step name fails here, before anything is installed
    if not EXTRAS.fullmatch(environ.get("LLMOPS_EXTRAS", "")):
        raise InputError("extras: name extras of llmops-ci separated by commas (e.g. azure)")
    workdir = Path(inputs.working_directory)
    if not workdir.is_dir():
        raise InputError(f"working-directory: '{inputs.working_directory}' is not a folder (it is relative to the "
                         "repository root)")
    action = Path(environ.get("ACTION_PATH", "."))
    # the venv cache key follows what pip installs from; hashFiles() cannot see the action's folder
    deps = sha256((action / "pyproject.toml").read_bytes())[:16]
    # one baseline (and artifact) per project in the repository: its working directory and config.
    # The raw input texts, hashed as the action has always hashed them, so existing baselines still match.
    raw = {name: environ.get(f"LLMOPS_{name}", "") for name in ("WORKING_DIRECTORY", "CONFIG", "STEPS", "FLOWS",
                                                                 "BACKEND")}
    scope = sha256(f"{raw['WORKING_DIRECTORY']}\n{raw['CONFIG']}\n".encode())[:12]
    artifact = environ.get("LLMOPS_ARTIFACT_NAME", "")
    if not artifact:
        parts = (scope, raw["STEPS"], raw["FLOWS"], raw["BACKEND"], environ.get("PYTHON_VERSION", ""),
                 environ.get("RUNNER_OS", ""))
        leg = sha256("".join(f"{p}\n" for p in parts).encode())[:8]
        artifact = f"llmops-ci-{environ.get('JOB_ID', 'job')}-{leg}-attempt{environ.get('RUN_ATTEMPT', '1')}"
    host.set_output("deps", deps)
    host.set_output("scope", scope)
    host.set_output("state-dir", str(workdir.resolve() / inputs.state_dir))
    host.set_output("artifact", artifact)
    host.set_output("venv", str(Path(environ.get("RUNNER_TEMP", ".")) / "llmops-ci-venv"))
    return 0
