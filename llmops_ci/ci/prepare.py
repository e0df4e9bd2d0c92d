"""The action's first step, before llmops-ci is installed: refuse unsafe events, check the inputs that
the install needs, and name the venv, its cache key, the baseline's cache keys and the artifact.

Runs on the bare setup-python interpreter with the action's folder on PYTHONPATH: stdlib only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llmops_ci.ci.plan import InputError, read_inputs
from llmops_ci.platforms import Host

EXTRA = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# actions/cache refuses a key with a comma ("Key Validation Error: ... cannot contain commas", thrown before its
# try) and one over 512 characters; every part of a key below goes through cache_part()
KEY_LIMIT = 512


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normalise_extras(text: str, backend: str) -> tuple[str, ...]:
    """The extras as pip needs them: split on commas, spaces or newlines, lowercased (pip compares extras
    normalised, PEP 685), unique, sorted; ``azure`` added for the azureml backend."""
    names = {re.sub(r"[-_.]+", "-", name.lower()) for name in re.split(r"[\s,]+", text) if name}
    bad = sorted(name for name in names if not EXTRA.fullmatch(name))
    if bad:
        raise InputError(f"extras: '{bad[0]}' is not an extra of llmops-ci; name extras separated by commas "
                         "(e.g. azure,mlflow)")
    if backend == "azureml":
        names.add("azure")
    return tuple(sorted(names))


def cache_part(text: str) -> str:
    """A value that may go into an actions/cache key: no comma, no whitespace, bounded (a branch may be named
    ``a,b``); restore and save build their keys with this same function, so they still match."""
    cleaned = re.sub(r"[,\s]", "_", text)
    return cleaned if len(cleaned) <= 100 else cleaned[:80] + "-" + sha256(text.encode())[:12]


@dataclass(frozen=True)
class BaselinePlan:
    """What the action does with the baseline in this run: restore it (a pull request), save it (the default
    branch), or neither, and why."""

    mode: str  # restore | save | off
    why: str
    branch: str = ""  # the branch whose baseline is restored or saved


def baseline_plan(environ: Mapping[str, str], baseline: str) -> BaselinePlan:
    """The rule for every trigger the docs name. ``schedule`` payloads carry no ``repository`` (so no
    ``default_branch``): GitHub runs scheduled workflows on the latest commit of the default branch, so a
    schedule's ref *is* the default branch. push and workflow_dispatch carry
    ``repository.default_branch``; the input ``default-branch`` overrides both."""
    if baseline != "auto":
        return BaselinePlan("off", f"baseline: {baseline}")
    event = environ.get("GITHUB_EVENT_NAME", "")
    if event == "pull_request":
        base = environ.get("GITHUB_BASE_REF", "")
        return BaselinePlan("restore", f"pull request into {base}", base) if base else \
            BaselinePlan("off", "pull request without a base branch")
    if event == "workflow_run":  # a companion that publishes another run's (a PR's) results: never a baseline
        return BaselinePlan("off", "workflow_run publishes another run's results: no baseline saved")
    ref = environ.get("GITHUB_REF", "")
    if not ref.startswith("refs/heads/"):
        return BaselinePlan("off", f"{ref or 'no ref'} is not a branch: no baseline saved")
    branch = ref.removeprefix("refs/heads/")
    default = environ.get("LLMOPS_DEFAULT_BRANCH", "").strip().removeprefix("refs/heads/")
    if not default:
        default = event_default_branch(environ.get("GITHUB_EVENT_PATH", ""))
    if not default and event == "schedule":
        default = branch
    if not default:
        return BaselinePlan("off", f"the {event or 'unknown'} event names no default branch: no baseline saved "
                                   "(set the input default-branch)")
    if branch != default:
        return BaselinePlan("off", f"{branch} is not the default branch {default}: no baseline saved")
    return BaselinePlan("save", f"{event} on the default branch {default}", branch)


def event_default_branch(path: str) -> str:
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
    except (OSError, ValueError):
        return ""
    repository = payload.get("repository") if isinstance(payload, dict) else None
    value = repository.get("default_branch") if isinstance(repository, dict) else None
    return value if isinstance(value, str) else ""


def prepare(environ: Mapping[str, str], host: Host) -> int:
    refusal = host.refusal()
    if refusal:
        host.message("error", refusal)
        return 2
    inputs = read_inputs(environ, host)  # a bad step name fails here, before anything is installed
    extras = normalise_extras(environ.get("LLMOPS_EXTRAS", ""), inputs.backend)
    workdir = Path(inputs.working_directory)
    if not workdir.is_dir():
        raise InputError(f"working-directory: '{inputs.working_directory}' is not a folder (it is relative to the "
                         "repository root)")
    action = Path(environ.get("ACTION_PATH", "."))
    # the venv cache key follows what pip installs from; hashFiles() cannot see the action's folder
    deps = sha256((action / "pyproject.toml").read_bytes())[:16]
    # one baseline (and artifact) per project in the repository: its working directory and config.
    # The raw input texts, hashed as the action has always hashed them, so existing baselines still match.
    raw = {name: environ.get(f"LLMOPS_{name}", "") for name in ("WORKING_DIRECTORY", "CONFIG", "FLOWS", "BACKEND")}
    scope = sha256(f"{raw['WORKING_DIRECTORY']}\n{raw['CONFIG']}\n".encode())[:12]
    artifact = environ.get("LLMOPS_ARTIFACT_NAME", "")
    if not artifact:
        parts = (scope, " ".join(inputs.steps), raw["FLOWS"], raw["BACKEND"], environ.get("PYTHON_VERSION", ""),
                 environ.get("RUNNER_OS", ""))
        leg = sha256("".join(f"{p}\n" for p in parts).encode())[:8]
        artifact = f"llmops-ci-{environ.get('JOB_ID', 'job')}-{leg}-attempt{environ.get('RUN_ATTEMPT', '1')}"
    venv_key = "-".join(cache_part(p) for p in (
        "llmops-ci-venv", environ.get("RUNNER_OS", ""), environ.get("RUNNER_ARCH", ""),
        "py" + environ.get("PYTHON_VERSION", ""), "extras[" + "+".join(extras) + "]", deps))
    plan = baseline_plan(environ, inputs.baseline)
    branch = cache_part(plan.branch)
    prefix = f"llmops-baseline-{branch}-{scope}-"
    run_id, attempt = cache_part(environ.get("RUN_ID", "0")), cache_part(environ.get("RUN_ATTEMPT", "1"))
    host.message("info", f"baseline: {plan.mode} ({plan.why})")
    host.set_output("deps", deps)
    host.set_output("extras", ",".join(extras))
    host.set_output("venv-key", venv_key[:KEY_LIMIT])
    host.set_output("scope", scope)
    host.set_output("baseline-mode", plan.mode)
    host.set_output("baseline-restore-key", f"{prefix}{run_id}" if plan.mode == "restore" else "")
    host.set_output("baseline-restore-prefix", prefix if plan.mode == "restore" else "")
    host.set_output("baseline-save-key", f"{prefix}{run_id}-{attempt}" if plan.mode == "save" else "")
    host.set_output("state-dir", str(workdir.resolve() / inputs.state_dir))
    host.set_output("artifact", artifact)
    host.set_output("venv", str(Path(environ.get("RUNNER_TEMP", ".")) / "llmops-ci-venv"))
    return 0
