"""The wrapper's inputs, read from the environment, and the llmops-ci command lines they make.

Both wrappers pass the same ``LLMOPS_*`` variables: the action maps its inputs, the template its
parameters. Which step takes which option is decided here, once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llmops_ci.platforms import Host

STEPS = ("pr", "lint", "test", "batch-run", "eval-run", "gate", "register", "deploy", "comment")
RUNS_FLOWS = frozenset({"pr", "batch-run", "eval-run"})  # these take --changed-since
TAKES_LLM_CACHE = RUNS_FLOWS | {"test"}
GATES = frozenset({"pr", "gate"})  # these compare with --baseline; the run steps use it only with --changed-since
TRUE = frozenset({"true", "yes", "on", "1", "auto", ""})
FALSE = frozenset({"false", "no", "off", "0"})


class InputError(Exception):
    """A wrapper input that cannot be used; the message names the input and what to write instead."""


@dataclass(frozen=True)
class Inputs:
    steps: tuple[str, ...]
    config: str = "llmops.yaml"
    flows: tuple[str, ...] = ()
    working_directory: str = "."
    state_dir: str = ".llmops"
    backend: str = "local"
    comment: bool = True
    baseline: str = "auto"  # auto | none | a path (relative to the working directory)
    baseline_dir: str = ""  # where the wrapper restored the target branch's baseline (auto)
    baseline_key: str = ""  # the cache entry it came from (the action), for the log
    changed_since: str = ""  # '' | auto | a git ref
    llm_cache: str = ""


def split_names(text: str) -> tuple[str, ...]:
    """Names separated by spaces, commas or newlines, as a YAML block (``flows: |``) gives them."""
    return tuple(name for name in re.split(r"[\s,]+", text) if name)


def read_steps(environ: Mapping[str, str], host: Host) -> tuple[tuple[str, ...], str]:
    """``LLMOPS_STEPS`` (the action's ``steps``, the template's ``steps``), or the action's deprecated ``step``
    (``LLMOPS_STEP``); both given and different is an error, neither means ``pr``."""
    new = split_names(environ.get("LLMOPS_STEPS", ""))
    old = split_names(environ.get("LLMOPS_STEP", ""))
    word = host.names.get("steps", "steps")
    if old and new and old != new:
        raise InputError(f"{word}: give the steps once: 'steps: {' '.join(new)}' and the deprecated "
                         f"'step: {' '.join(old)}' disagree (remove step)")
    if old and not new:
        host.message("warning", "the input 'step' is deprecated: name it 'steps' (the same value; 'step' keeps "
                                "working for now)")
        return old, "step"
    return new or ("pr",), word


def read_inputs(environ: Mapping[str, str], host: Host) -> Inputs:
    def get(name: str, default: str = "") -> str:
        return environ.get(f"LLMOPS_{name}", default).strip()

    steps, word = read_steps(environ, host)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise InputError(f"{word}: unknown step '{unknown[0]}'; use {', '.join(STEPS)} (several separated by spaces)")
    comment = get("COMMENT", "true").lower()
    if comment not in TRUE | FALSE:
        raise InputError(f"comment: '{comment}' is neither true nor false")
    baseline = get("BASELINE", "auto")
    return Inputs(
        steps=steps, config=get("CONFIG", "llmops.yaml") or "llmops.yaml", flows=split_names(get("FLOWS")),
        working_directory=get("WORKING_DIRECTORY", ".") or ".", state_dir=get("STATE_DIR", ".llmops") or ".llmops",
        backend=get("BACKEND", "local") or "local", comment=comment in TRUE, baseline=baseline or "none",
        baseline_dir=get("BASELINE_DIR"), baseline_key=get("BASELINE_KEY"), changed_since=get("CHANGED_SINCE"),
        llm_cache=get("LLM_CACHE"))


@dataclass(frozen=True)
class Plan:
    commands: list[list[str]]  # each an argv for llmops_ci.cli.main
    notes: list[tuple[str, str]]  # (level, message) to show before running


def resolve_baseline(inputs: Inputs, host: Host) -> tuple[str | None, list[tuple[str, str]]]:
    if inputs.baseline == "none":
        return None, []
    if inputs.baseline != "auto":
        return inputs.baseline, [("info", f"baseline: {inputs.baseline}")]
    found = find_baseline(Path(inputs.baseline_dir)) if inputs.baseline_dir else None
    if found is not None:
        where = f" from cache entry {inputs.baseline_key}" if inputs.baseline_key else ""
        return str(found), [("info", f"baseline: the target branch's results{where} ({found})")]
    if host.is_pull_request():
        return None, [("notice", host.no_baseline)]
    return None, []


ATTEMPT = re.compile(r"llmops-baseline-(\d+)")


def find_baseline(folder: Path) -> Path | None:
    """The restored baseline: the folder itself (the action's cache), or its ``llmops-baseline-<attempt>`` with
    the highest attempt that holds a summary (Azure Pipelines: each attempt of a build publishes its own name,
    since an artifact cannot be published twice, and the download brings them all)."""
    if (folder / "summary.json").is_file():
        return folder
    attempts = []
    for child in folder.glob("llmops-baseline-*") if folder.is_dir() else []:
        m = ATTEMPT.fullmatch(child.name)
        if m and (child / "summary.json").is_file():
            attempts.append((int(m.group(1)), child))
    return max(attempts)[1] if attempts else None


def resolve_changed_since(inputs: Inputs, host: Host) -> tuple[str | None, list[tuple[str, str]]]:
    word = host.names.get("changed_since", "changed-since")
    if not inputs.changed_since:
        return None, []
    if inputs.changed_since == "auto":
        base = host.pull_request_base()
        if base is None:
            return None, [("info", f"{word}: auto runs every flow outside a pull request")]
        return f"origin/{base}", []
    if not RUNS_FLOWS.intersection(inputs.steps):
        return None, [("warning", f"{word} is ignored: no step of {' '.join(inputs.steps)} runs flows")]
    return inputs.changed_since, []


def make_plan(inputs: Inputs, host: Host) -> Plan:
    baseline, notes = resolve_baseline(inputs, host)
    changed, more = resolve_changed_since(inputs, host)
    notes += more
    comment = inputs.comment
    if comment and (why := host.comment_unsupported()):
        notes.append(("info", why))
        comment = False
    # `--config PATH` as the docs write it; a path that starts with '-' would read as an option
    config = "./" + inputs.config if inputs.config.startswith("-") else inputs.config
    commands = []
    for step in inputs.steps:
        # values attached with '=': a flow name or ref that starts with '-' stays a value
        argv = [step, "--config", config, f"--state-dir={inputs.state_dir}", f"--backend={inputs.backend}"]
        argv += [f"--flow={flow}" for flow in inputs.flows]
        if not comment:
            argv.append("--comment=off")
        if changed and step in RUNS_FLOWS:
            argv.append(f"--changed-since={changed}")
        if baseline and (step in GATES or (changed and step in RUNS_FLOWS)):
            argv.append(f"--baseline={baseline}")
        if inputs.llm_cache and step in TAKES_LLM_CACHE:
            argv.append(f"--llm-cache={inputs.llm_cache}")
        commands.append(argv)
    return Plan(commands, notes)
