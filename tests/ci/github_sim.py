"""A GitHub Actions runner for action.yml, step by step, the way the runner and the actions it pins behave.

What is real: every ``run:`` step is executed with bash, with its ``env:`` evaluated by the expression language
(tests/ci/expressions.py), the runner's default variables, a ``GITHUB_OUTPUT`` file per step and the event
payload at ``GITHUB_EVENT_PATH``; ``python -m llmops_ci.ci`` is the real wrapper entry. What is simulated, each
after its documented rules:

- ``actions/setup-python``: outputs ``python-path`` and ``python-version`` (the interpreter running the tests).
- The install step: a ``python`` in the venv that runs this test interpreter (pip installs are not repeated).
- ``actions/cache`` (v5): a key with a comma, or over 512 characters, throws "Key Validation Error" (restore,
  before its try); at most 10 restore-keys. Restore: an exact key, then the newest entry whose key starts with a
  restore key; a run sees the entries of its own ref and of the default branch, a pull request also those of its
  base branch (docs.github.com "Caching dependencies": "Restrictions for accessing a cache"). Save: an existing
  key is not overwritten (a warning). The main action saves in its post step only if the job succeeded.
- ``actions/upload-artifact`` (v4+): a name already uploaded in the same workflow run fails ("an artifact with
  this name already exists on the workflow run"), also across attempts of that run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.ci.expressions import Evaluator, interpolate, to_text, truthy

ROOT = Path(__file__).resolve().parents[2]
ACTION = ROOT / "action.yml"


@dataclass
class CacheEntry:
    key: str
    ref: str
    path: str
    content: Path  # a copy of the saved folder
    created: int


@dataclass
class Repository:
    """What outlives one run: the caches, and each run's artifacts (by run id)."""

    default_branch: str = "main"
    caches: list[CacheEntry] = field(default_factory=list)
    artifacts: dict[str, dict[str, Path]] = field(default_factory=dict)
    clock: int = 0


@dataclass
class Event:
    name: str  # push, pull_request, schedule, workflow_dispatch, ...
    ref: str  # GITHUB_REF
    payload: dict[str, Any]
    base_ref: str = ""
    head_ref: str = ""
    run_id: int = 1000
    run_attempt: int = 1


def push(branch: str, default: str = "main", run_id: int = 1000, attempt: int = 1) -> Event:
    return Event("push", f"refs/heads/{branch}", {"ref": f"refs/heads/{branch}",
                                                  "repository": {"default_branch": default, "fork": False}},
                 run_id=run_id, run_attempt=attempt)


def schedule(branch: str = "main", run_id: int = 1000) -> Event:
    # the payload of a scheduled run carries only the cron expression
    return Event("schedule", f"refs/heads/{branch}", {"schedule": "0 3 * * *"}, run_id=run_id)


def dispatch(branch: str, default: str = "main", run_id: int = 1000) -> Event:
    return Event("workflow_dispatch", f"refs/heads/{branch}",
                 {"ref": f"refs/heads/{branch}", "inputs": {}, "repository": {"default_branch": default}},
                 run_id=run_id)


def pull_request(number: int, base: str = "main", head: str = "feature", fork: bool = False,
                 run_id: int = 2000) -> Event:
    head_repo = {"full_name": "someone/app" if fork else "octo/app", "fork": fork}
    return Event("pull_request", f"refs/pull/{number}/merge",
                 {"action": "synchronize", "number": number,
                  "pull_request": {"number": number, "base": {"ref": base}, "head": {"ref": head, "repo": head_repo}},
                  "repository": {"default_branch": "main"}}, base_ref=base, head_ref=head, run_id=run_id)


@dataclass
class StepResult:
    id: str
    name: str
    ran: bool
    outcome: str  # success | failure | skipped
    outputs: dict[str, str]
    log: str = ""


@dataclass
class JobResult:
    steps: list[StepResult]
    outputs: dict[str, Any]
    status: str  # success | failure
    environments: dict[str, dict[str, str]]  # step id -> the env its process got

    def step(self, step_id: str) -> StepResult:
        return next(s for s in self.steps if s.id == step_id)

    @property
    def log(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.log}" for s in self.steps if s.ran)


def read_outputs(path: Path) -> dict[str, str]:
    """``name=value`` lines and ``name<<DELIM`` blocks, the last value winning, as the runner reads them."""
    outputs, lines, i = {}, path.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            j = lines.index(delimiter, i + 1)
            outputs[name] = "\n".join(lines[i + 1:j])
            i = j + 1
            continue
        name, _, value = line.partition("=")
        outputs[name] = value
        i += 1
    return outputs


class Runner:
    def __init__(self, repo: Repository, workspace: Path, tmp: Path, event: Event, inputs: dict[str, str],
                 token: str = "ghs_token", api_url: str = "", extra_env: dict[str, str] | None = None) -> None:
        self.repo, self.workspace, self.tmp, self.event, self.token = repo, workspace, tmp, event, token
        tmp.mkdir(parents=True, exist_ok=True)
        self.api_url, self.extra_env = api_url, extra_env or {}
        self.action = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
        defaults = {name: to_text(spec.get("default", "")) for name, spec in self.action["inputs"].items()}
        unknown = set(inputs) - set(defaults)
        assert not unknown, f"the action has no input {unknown}"  # the runner warns; a test must not rely on it
        # the same path in every job, as on hosted runners (actions/cache versions an entry by its path)
        self.runner_temp = tmp.parent / "runner-temp"
        shutil.rmtree(self.runner_temp, ignore_errors=True)
        self.runner_temp.mkdir(parents=True)
        self.inputs = dict(defaults)
        evaluator = self.contexts({}, "success")
        self.inputs.update({k: to_text(interpolate(v, evaluator)) for k, v in defaults.items()})  # ${{ github.token }}
        self.inputs.update(inputs)
        self.event_path = tmp / "event.json"
        self.event_path.write_text(json.dumps(event.payload), encoding="utf-8")
        self.summary = tmp / "step-summary"
        self.post: list[tuple[str, dict[str, Any]]] = []

    def contexts(self, steps: dict[str, Any], status: str) -> Evaluator:
        github = {"token": self.token, "action_path": str(ROOT), "job": "check", "run_id": str(self.event.run_id),
                  "run_attempt": str(self.event.run_attempt), "event_name": self.event.name, "ref": self.event.ref,
                  "ref_name": self.event.ref.removeprefix("refs/heads/"), "base_ref": self.event.base_ref,
                  "head_ref": self.event.head_ref, "event": self.event.payload, "workspace": str(self.workspace),
                  "repository": "octo/app"}
        runner = {"temp": str(self.runner_temp), "os": "Linux", "arch": "X64"}
        functions = {"always": lambda: True, "success": lambda: status == "success",
                     "failure": lambda: status == "failure", "cancelled": lambda: False,
                     "format": lambda f, *a: f.format(*[to_text(x) for x in a])}
        return Evaluator({"inputs": self.inputs, "steps": steps, "github": github, "runner": runner}, functions)

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(
            ("GITHUB_", "INPUT_", "RUNNER_", "ACTIONS_", "TF_BUILD", "SYSTEM_", "BUILD_", "LLMOPS_", "OPENAI_"))}
        env.update({
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "GITHUB_ACTIONS": "true", "CI": "true", "GITHUB_EVENT_NAME": self.event.name,
            "GITHUB_EVENT_PATH": str(self.event_path), "GITHUB_REF": self.event.ref,
            "GITHUB_REF_NAME": self.event.ref.removeprefix("refs/heads/"), "GITHUB_BASE_REF": self.event.base_ref,
            "GITHUB_HEAD_REF": self.event.head_ref, "GITHUB_REPOSITORY": "octo/app",
            "GITHUB_RUN_ID": str(self.event.run_id), "GITHUB_RUN_ATTEMPT": str(self.event.run_attempt),
            "GITHUB_SERVER_URL": "https://github.com", "GITHUB_API_URL": self.api_url or "http://127.0.0.1:9",
            "GITHUB_WORKSPACE": str(self.workspace), "GITHUB_STEP_SUMMARY": str(self.summary),
            "RUNNER_TEMP": str(self.runner_temp), "RUNNER_OS": "Linux", "RUNNER_ARCH": "X64",
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        env.update(self.extra_env)
        return env

    def run(self) -> JobResult:
        steps_ctx: dict[str, Any] = {}
        results: list[StepResult] = []
        environments: dict[str, dict[str, str]] = {}
        status = "success"
        for index, step in enumerate(self.action["runs"]["steps"]):
            step_id = step.get("id", f"__{index}")
            evaluator = self.contexts(steps_ctx, status)
            condition = step.get("if", "success()")
            condition = condition[3:-2] if condition.strip().startswith("${{") else condition
            if not truthy(evaluator.evaluate(condition)):
                results.append(StepResult(step_id, step.get("name", ""), False, "skipped", {}))
                steps_ctx[step_id] = {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
                continue
            if "run" in step:
                result, env = self._run(step, step_id, evaluator)
                environments[step_id] = env
            else:
                result = self._uses(step, step_id, evaluator)
            results.append(result)
            steps_ctx[step_id] = {"outputs": result.outputs, "outcome": result.outcome,
                                  "conclusion": result.outcome}
            if result.outcome == "failure":
                status = "failure"
        for uses, with_ in self.post:  # post steps, in reverse order, as the runner does
            if uses == "cache" and status == "success":
                self._cache_save(with_)
        evaluator = self.contexts(steps_ctx, status)
        outputs = {name: interpolate(str(spec["value"]), evaluator) for name, spec in self.action["outputs"].items()}
        return JobResult(results, outputs, status, environments)

    # -- run: steps -----------------------------------------------------------------------------------------------

    def _run(self, step: dict[str, Any], step_id: str, evaluator: Evaluator) -> tuple[StepResult, dict[str, str]]:
        assert "${{" not in step["run"], "an expression inside a run: script"
        env = self.base_env()
        env.update({k: to_text(interpolate(str(v), evaluator)) for k, v in (step.get("env") or {}).items()})
        output = self.tmp / f"output-{step_id}"
        output.write_text("", encoding="utf-8")
        env["GITHUB_OUTPUT"] = str(output)
        if step_id == "venv":  # the install: a venv whose python is this test interpreter
            venv = Path(env["VENV"])
            (venv / "bin").mkdir(parents=True, exist_ok=True)
            python = venv / "bin" / "python"
            python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
            python.chmod(0o755)
            output.write_text(f"python={python}\n", encoding="utf-8")
            return StepResult(step_id, step.get("name", ""), True, "success", read_outputs(output)), env
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                              cwd=self.workspace, env=env, capture_output=True, text=True, timeout=600)
        outcome = "success" if proc.returncode == 0 else "failure"
        return StepResult(step_id, step.get("name", ""), True, outcome, read_outputs(output),
                          proc.stdout + proc.stderr + f"\n(exit {proc.returncode})"), env

    # -- uses: steps ----------------------------------------------------------------------------------------------

    def _uses(self, step: dict[str, Any], step_id: str, evaluator: Evaluator) -> StepResult:
        uses = step["uses"].split("@")[0]
        with_ = {k: to_text(interpolate(str(v), evaluator)) for k, v in (step.get("with") or {}).items()}
        name = step.get("name", uses)
        try:
            if uses == "actions/setup-python":
                base = getattr(sys, "_base_executable", sys.executable)
                return StepResult(step_id, name, True, "success", {
                    "python-path": base, "python-version": "3.11.9", "cache-hit": "false"})
            if uses in ("actions/cache", "actions/cache/restore"):
                outputs = self._cache_restore(with_)
                if uses == "actions/cache":
                    self.post.insert(0, ("cache", with_))
                return StepResult(step_id, name, True, "success", outputs)
            if uses == "actions/cache/save":
                return StepResult(step_id, name, True, "success", {}, self._cache_save(with_))
            if uses == "actions/upload-artifact":
                return StepResult(step_id, name, True, "success", {}, self._upload(with_))
        except ActionFailed as exc:
            return StepResult(step_id, name, True, "failure", {}, str(exc))
        raise AssertionError(f"the simulation does not know {uses}")

    def _check_key(self, key: str) -> None:
        if "," in key:
            raise ActionFailed(f"Key Validation Error: {key} cannot contain commas.")
        if len(key) > 512:
            raise ActionFailed(f"Key Validation Error: {key} cannot be larger than 512 characters.")

    def _visible_refs(self) -> list[str]:
        refs = [self.event.ref]
        if self.event.base_ref:
            refs.append(f"refs/heads/{self.event.base_ref}")
        refs.append(f"refs/heads/{self.repo.default_branch}")
        return list(dict.fromkeys(refs))

    def _cache_restore(self, with_: dict[str, str]) -> dict[str, str]:
        key = with_["key"]
        restore_keys = [k.strip() for k in with_.get("restore-keys", "").splitlines() if k.strip()]
        for k in [key, *restore_keys]:
            self._check_key(k)
        if len(restore_keys) > 10:
            raise ActionFailed("Key Validation Error: Keys are limited to a maximum of 10.")
        for ref in self._visible_refs():
            entries = [e for e in self.repo.caches if e.ref == ref and e.path == with_["path"]]
            exact = [e for e in entries if e.key == key]
            match = exact[0] if exact else None
            for prefix in restore_keys if match is None else []:
                found = sorted((e for e in entries if e.key.startswith(prefix)), key=lambda e: e.created)
                if found:
                    match = found[-1]
                    break
            if match is not None:
                target = Path(with_["path"])
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(match.content, target)
                return {"cache-hit": "true" if match.key == key else "false", "cache-primary-key": key,
                        "cache-matched-key": match.key}
        return {"cache-hit": "false", "cache-primary-key": key, "cache-matched-key": ""}

    def _cache_save(self, with_: dict[str, str]) -> str:
        key = with_["key"]
        self._check_key(key)
        if any(e.key == key and e.ref == self.event.ref for e in self.repo.caches):
            return f"Failed to save: Unable to reserve cache with key {key}, another job may be creating this cache."
        source = Path(with_["path"])
        if not source.exists():
            return f"Path Validation Error: Path(s) specified in the action for caching do(es) not exist: {source}"
        self.repo.clock += 1
        content = self.tmp.parent / "caches" / f"{id(self.repo)}-{self.repo.clock}"
        shutil.copytree(source, content)
        self.repo.caches.append(CacheEntry(key, self.event.ref, with_["path"], content, self.repo.clock))
        return f"Cache saved with key: {key}"

    def _upload(self, with_: dict[str, str]) -> str:
        name = with_.get("name") or "artifact"
        run = self.repo.artifacts.setdefault(str(self.event.run_id), {})
        if name in run and with_.get("overwrite", "false") != "true":
            raise ActionFailed(f"Failed to CreateArtifact: an artifact with this name already exists on the workflow "
                               f"run: {name}")
        paths = [line.strip() for line in with_["path"].splitlines() if line.strip()]
        include, exclude = [Path(p) for p in paths if not p.startswith("!")], [p[1:] for p in paths
                                                                            if p.startswith("!")]
        self.repo.clock += 1
        target = self.tmp.parent / "artifacts" / f"{id(self.repo)}-{self.repo.clock}"
        for source in include:
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True,
                                ignore=lambda d, names: [n for n in names if str(Path(d) / n) in exclude])
        run[name] = target
        return f"Artifact {name} uploaded"


class ActionFailed(Exception):
    pass
