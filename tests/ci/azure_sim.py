"""Azure Pipelines for the templates, step by step: template expansion (``${{ }}``, ``${{ if }}`` /
``${{ elseif }}`` / ``${{ else }}``, ``${{ each }}``, ``- template:`` with typed parameters), then a job run as the
agent runs it (runtime conditions, ``$(macro)`` expansion, ``##vso`` logging commands, output variables, a build
result) with the tasks the templates use simulated after their documented rules:

- ``DownloadPipelineArtifact@2`` (learn.microsoft.com, "Download Pipeline Artifacts task"): with
  ``buildType: specific`` and ``buildVersionToDownload: latestFromBranch`` it takes the latest build of
  ``branchName``; only succeeded builds unless ``allowPartiallySucceededBuilds`` / ``allowFailedBuilds`` are
  true (both default false); no build: the task fails. Without ``artifactName`` every artifact is downloaded into
  ``targetPath/<artifact>/``, filtered by ``itemPattern`` (which then includes the artifact name). On Azure DevOps
  Server it fails: ``OnPremIsNotSupported``.
- ``DownloadBuildArtifacts@1``: the same for build artifacts (``downloadPath``), and it has no
  ``allowFailedBuilds``: failed builds are skipped.
- ``PublishPipelineArtifact@1`` / ``PublishBuildArtifacts@1``: a name can be published once per build;
  "Rerun failed jobs" keeps the build (and its artifacts) and raises ``System.JobAttempt``:
  "Artifact <name> already exists for build <id>".
- ``Cache@2``: the key's segments resolved (macros); a hit restores the path; a miss saves it after a
  succeeded job.
- The install step: a venv whose ``python`` runs this test interpreter; ``checkout`` and ``UsePythonVersion@0``:
  nothing (the workspace is laid out by the test).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.ci.expressions import Evaluator, azure_functions, interpolate, to_text

ROOT = Path(__file__).resolve().parents[2]
EXTENDS = ROOT / "azure-pipelines-template.yml"
STEPS = ROOT / "azure-pipelines-steps.yml"
TYPES = {"string": str, "boolean": bool, "object": (list, dict, str), "number": (int, float), "step": dict,
         "stepList": list}


class TemplateError(AssertionError):
    pass


# -- template expansion (compile time) ---------------------------------------------------------------------------


def parameters_of(path: Path, given: dict[str, Any]) -> dict[str, Any]:
    declared = {p["name"]: p for p in yaml.safe_load(path.read_text(encoding="utf-8"))["parameters"]}
    unknown = set(given) - set(declared)
    if unknown:
        raise TemplateError(f"{path.name}: unexpected parameter {sorted(unknown)}")
    values = {}
    for name, spec in declared.items():
        value = given.get(name, spec.get("default"))
        if name not in given and "default" not in spec:
            raise TemplateError(f"{path.name}: a value for the parameter {name} is required")
        if spec["type"] == "boolean" and isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, TYPES[spec["type"]]):
            raise TemplateError(f"{path.name}: parameter {name} is not a valid {spec['type']}: {value!r}")
        if "values" in spec and value not in spec["values"]:
            raise TemplateError(f"{path.name}: parameter {name}: '{value}' is not one of {spec['values']}")
        values[name] = value
    return values


def expand_file(path: Path, given: dict[str, Any]) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    scope = {"parameters": parameters_of(path, given)}
    body = {k: v for k, v in doc.items() if k != "parameters"}
    result = Expander(path.parent).node(body, scope)
    assert isinstance(result, dict)
    return result


class Expander:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def evaluator(self, scope: dict[str, Any]) -> Evaluator:
        return Evaluator(scope, azure_functions(), azure=True)

    def node(self, value: Any, scope: dict[str, Any]) -> Any:
        if isinstance(value, dict):
            return self.mapping(value, scope)
        if isinstance(value, list):
            return self.sequence(value, scope)
        if isinstance(value, str):
            return interpolate(value, self.evaluator(scope))
        return value

    def directive(self, key: str) -> str | None:
        m = re.fullmatch(r"\$\{\{\s*(.*?)\s*\}\}", key.strip()) if isinstance(key, str) else None
        return m.group(1) if m else None

    def branch(self, inner: str, scope: dict[str, Any], taken: bool | None) -> tuple[bool, bool | None]:
        """(include this branch, the chain's state afterwards) for if / elseif / else."""
        if inner.startswith("if "):
            ok = bool(self.evaluator(scope).evaluate(inner[3:]))
            return ok, ok
        if inner.startswith("elseif "):
            if taken is None:
                raise TemplateError("elseif without if")
            ok = not taken and bool(self.evaluator(scope).evaluate(inner[7:]))
            return ok, taken or ok
        if inner == "else":
            if taken is None:
                raise TemplateError("else without if")
            return not taken, None
        raise TemplateError(f"not a conditional: {inner}")

    def mapping(self, value: dict[str, Any], scope: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        taken: bool | None = None
        for key, item in value.items():
            inner = self.directive(key)
            if inner is None:
                out[to_text(self.node(key, scope), True)] = self.node(item, scope)
                taken = None
            elif inner.startswith(("if ", "elseif ")) or inner == "else":
                include, taken = self.branch(inner, scope, taken)
                if include:
                    expanded = self.node(item, scope)
                    if not isinstance(expanded, dict):
                        raise TemplateError(f"{key} in a mapping must hold a mapping")
                    out.update(expanded)
            elif inner.startswith("each "):
                for name, inner_scope in self.each(inner, scope):
                    del name
                    out.update(self.node(item, inner_scope))
            else:  # a key that is an expression (${{ pair.key }})
                out[to_text(self.evaluator(scope).evaluate(inner), True)] = self.node(item, scope)
        return out

    def each(self, inner: str, scope: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        m = re.fullmatch(r"each (\w+) in (.+)", inner)
        if not m:
            raise TemplateError(f"cannot read {inner}")
        collection = self.evaluator(scope).evaluate(m.group(2))
        items = collection.items() if isinstance(collection, dict) else enumerate(collection or [])
        result = []
        for key, val in items:
            bound = {"key": key, "value": val} if isinstance(collection, dict) else val
            result.append((str(key), {**scope, m.group(1): bound}))
        return result

    def sequence(self, value: list[Any], scope: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        taken: bool | None = None
        for item in value:
            if isinstance(item, dict) and len(item) == 1 and self.directive(next(iter(item))) is not None:
                key, body = next(iter(item.items()))
                inner = self.directive(key) or ""
                if inner.startswith("each "):
                    for _, inner_scope in self.each(inner, scope):
                        out.extend(self.sequence(body, inner_scope))
                    taken = None
                    continue
                include, taken = self.branch(inner, scope, taken)
                if include:
                    out.extend(self.sequence(body, scope))
                continue
            taken = None
            if isinstance(item, dict) and "template" in item and not any(k in item for k in ("extends",)):
                path = self.folder / str(item["template"]).split("@")[0]
                given = self.node(item.get("parameters") or {}, scope)
                out.extend(expand_file(path, given)["steps"])
                continue
            out.append(self.node(item, scope))
        return out


def expand_pipeline(extends_parameters: dict[str, Any]) -> dict[str, Any]:
    return expand_file(EXTENDS, extends_parameters)


def job_steps(expanded: dict[str, Any]) -> list[dict[str, Any]]:
    jobs = expanded["stages"][0]["jobs"]
    assert len(jobs) == 1
    return list(jobs[0]["steps"])


# -- the organisation: builds and their artifacts -------------------------------------------------------------


@dataclass
class Build:
    id: int
    branch: str
    reason: str
    result: str = "inProgress"  # succeeded | partiallySucceeded | failed | canceled
    artifacts: dict[str, Path] = field(default_factory=dict)
    kind: dict[str, str] = field(default_factory=dict)  # artifact name -> pipeline | build
    attempt: int = 1


@dataclass
class Organisation:
    root: Path
    server: bool = False  # Azure DevOps Server (on-premises)
    builds: list[Build] = field(default_factory=list)
    caches: dict[str, Path] = field(default_factory=dict)
    clock: int = 0

    def new_build(self, branch: str, reason: str) -> Build:
        build = Build(len(self.builds) + 1, branch, reason)
        self.builds.append(build)
        return build

    def store(self, source: Path) -> Path:
        self.clock += 1
        target = self.root / "store" / str(self.clock)
        shutil.copytree(source, target) if source.is_dir() else target.mkdir(parents=True)
        return target


class TaskFailed(Exception):
    pass


@dataclass
class StepRun:
    name: str
    display: str
    ran: bool
    result: str  # succeeded | succeededWithIssues | failed | skipped
    log: str = ""
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class JobRun:
    steps: list[StepRun]
    outputs: dict[str, str]  # "<step name>.<variable>"
    variables: dict[str, str]
    build: Build

    @property
    def log(self) -> str:
        return "\n".join(f"--- {s.display}: {s.result}\n{s.log}" for s in self.steps if s.ran)

    def step(self, display_prefix: str) -> StepRun:
        return next(s for s in self.steps if s.display.startswith(display_prefix))


VSO = re.compile(r"##vso\[(?P<cmd>[\w.]+)(?P<props>[^\]]*)\](?P<value>.*)")


class Agent:
    """Runs the expanded steps of one job of one build (attempt ``build.attempt``)."""

    def __init__(self, org: Organisation, build: Build, workspace: Path, predefined: dict[str, str],
                 python: str = sys.executable) -> None:
        self.org, self.build, self.workspace, self.python = org, build, workspace, python
        self.variables = {
            "Pipeline.Workspace": str(workspace), "Build.SourcesDirectory": str(workspace / "s"),
            "Build.BuildId": str(build.id), "Build.SourceBranch": build.branch, "Build.Reason": build.reason,
            "System.JobAttempt": str(build.attempt), "System.TeamProjectId": "project-id",
            "System.DefinitionId": "7", "System.CollectionUri": "https://dev.azure.com/contoso/",
            "Agent.OS": "Linux", "Agent.OSArchitecture": "X64", "System.AccessToken": "ado-token",
            "Build.Repository.Provider": "TfsGit", **predefined}
        self.outputs: dict[str, str] = {}
        self.post: list[tuple[str, Path]] = []

    def macro(self, text: str) -> str:
        for _ in range(5):
            text = re.sub(r"\$\(([A-Za-z0-9_.]+)\)", lambda m: self.variables.get(m.group(1), m.group(0)), text)
        return text

    def condition(self, text: str, status: str) -> bool:
        functions = azure_functions({
            "succeeded": lambda: status in ("succeeded", "succeededWithIssues"), "failed": lambda: status == "failed",
            "succeededOrFailed": lambda: True, "always": lambda: True, "canceled": lambda: False})
        variables = {k: v for k, v in self.variables.items()}
        return bool(Evaluator({"variables": variables}, functions, azure=True).evaluate(text))

    def env_of(self, step: dict[str, Any]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(
            ("SYSTEM_", "BUILD_", "LLMOPS_", "GITHUB_", "OPENAI_", "AGENT_", "PIPELINE_")) and k != "TF_BUILD"}
        env.update({"TF_BUILD": "True", "PYTHONDONTWRITEBYTECODE": "1",
                    "PATH": os.pathsep.join([str(Path(self.python).parent), env.get("PATH", "")])})
        for name, value in self.variables.items():  # every variable but secrets is mapped into the environment
            if name != "System.AccessToken":
                env[name.upper().replace(".", "_")] = value
        env.update({k: self.macro(to_text(v, True)) for k, v in (step.get("env") or {}).items()})
        return env

    def run(self, steps: list[dict[str, Any]]) -> JobRun:
        status = "succeeded"
        runs: list[StepRun] = []
        for step in steps:
            display = self.macro(str(step.get("displayName") or step.get("task") or step.get("checkout") or "script"))
            condition = step.get("condition", "succeeded()")
            if not self.condition(condition, status):
                runs.append(StepRun(step.get("name", ""), display, False, "skipped"))
                continue
            try:
                log, env = self.execute(step)
                result = "succeeded"
            except TaskFailed as exc:
                log, env = str(exc), getattr(exc, "env", {})
                result = "succeededWithIssues" if step.get("continueOnError") else "failed"
            runs.append(StepRun(step.get("name", ""), display, True, result, log, env))
            if result == "failed":
                status = "failed"
            elif result == "succeededWithIssues" and status == "succeeded":
                status = "succeededWithIssues"
        for key, path in self.post:
            if status in ("succeeded", "succeededWithIssues") and key not in self.org.caches and path.exists():
                self.org.caches[key] = self.org.store(path)
        self.build.result = {"succeeded": "succeeded", "succeededWithIssues": "partiallySucceeded",
                             "failed": "failed"}[status]
        return JobRun(runs, self.outputs, self.variables, self.build)

    # -- steps -------------------------------------------------------------------------------------------------

    def execute(self, step: dict[str, Any]) -> tuple[str, dict[str, str]]:
        if "checkout" in step:
            return "", {}
        if "bash" in step:
            if step.get("displayName") == "Install llmops-ci":
                return self.install(step), {}
            return self.script(step, step["bash"], step.get("workingDirectory"))
        task = step.get("task", "")
        inputs = {k: self.macro(to_text(v, True)) for k, v in (step.get("inputs") or {}).items()}
        if task == "AzureCLI@2":
            assert inputs.get("keepAzSessionActive") == "True" or inputs.get("keepAzSessionActive") == "true"
            return self.script(step, step["inputs"]["inlineScript"], step["inputs"].get("workingDirectory"))
        if task == "UsePythonVersion@0":
            return "", {}
        if task == "Cache@2":
            return self.cache(inputs), {}
        if task in ("DownloadPipelineArtifact@2", "DownloadBuildArtifacts@1"):
            return self.download(task, inputs), {}
        if task in ("PublishPipelineArtifact@1", "PublishBuildArtifacts@1"):
            return self.publish(task, inputs), {}
        raise AssertionError(f"the simulation does not know {task or step}")

    def script(self, step: dict[str, Any], text: str, cwd: str | None) -> tuple[str, dict[str, str]]:
        env = self.env_of(step)
        folder = self.macro(cwd) if cwd else str(self.workspace / "s")
        script = self.workspace / "_temp" / "step.sh"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(text, encoding="utf-8")
        proc = subprocess.run(["bash", "--noprofile", "--norc", str(script)], cwd=folder, env=env, text=True,
                              capture_output=True, timeout=600)
        for line in proc.stdout.splitlines():
            m = VSO.search(line)
            if m and m.group("cmd") == "task.setvariable":
                props = dict(p.split("=", 1) for p in m.group("props").strip().split(";") if "=" in p)
                name = props["variable"]
                if props.get("isOutput") == "true":
                    self.outputs[f"{step.get('name', '')}.{name}"] = m.group("value")
                else:
                    self.variables[name] = m.group("value")
        log = proc.stdout + proc.stderr + f"\n(exit {proc.returncode})"
        if proc.returncode != 0:
            exc = TaskFailed(log)
            exc.env = env  # type: ignore[attr-defined]
            raise exc
        return log, env

    def install(self, step: dict[str, Any]) -> str:
        venv = Path(self.env_of(step)["LLMOPS_VENV"])
        (venv / "bin").mkdir(parents=True, exist_ok=True)
        python = venv / "bin" / "python"
        python.write_text(f'#!/bin/sh\nexec "{self.python}" "$@"\n', encoding="utf-8")
        python.chmod(0o755)
        return f"installed into {venv}"

    def cache(self, inputs: dict[str, str]) -> str:
        key = " | ".join(part.strip() for part in inputs["key"].split("|"))
        if re.search(r"\$\([A-Za-z0-9_.]+\)", key):
            raise TaskFailed(f"the cache key has an unresolved variable: {key}")
        path = Path(inputs["path"])
        if key in self.org.caches:
            shutil.rmtree(path, ignore_errors=True)
            shutil.copytree(self.org.caches[key], path)
            return f"Cache hit: {key}"
        self.post.append((key, path))
        return f"Cache miss: {key}"

    def download(self, task: str, inputs: dict[str, str]) -> str:
        pipeline_artifacts = task == "DownloadPipelineArtifact@2"
        if pipeline_artifacts and self.org.server:
            raise TaskFailed("##[error]OnPremIsNotSupported: pipeline artifacts are not supported on Azure DevOps "
                             "Server")
        assert inputs["buildType"] == "specific" and inputs["buildVersionToDownload"] == "latestFromBranch"
        allowed = {"succeeded"}
        if inputs.get("allowPartiallySucceededBuilds", "false").lower() == "true":
            allowed.add("partiallySucceeded")
        if pipeline_artifacts and inputs.get("allowFailedBuilds", "false").lower() == "true":
            allowed.add("failed")
        candidates = [b for b in self.org.builds if b.branch == inputs["branchName"] and b.result in allowed
                      and b is not self.build]
        if not candidates:
            raise TaskFailed(f"##[error]No builds currently exist in the pipeline definition supplied "
                             f"(branch {inputs['branchName']}, results {sorted(allowed)})")
        build = max(candidates, key=lambda b: b.id)
        kind = "pipeline" if pipeline_artifacts else "build"
        target = Path(inputs["targetPath"] if pipeline_artifacts else inputs["downloadPath"])
        pattern = inputs.get("itemPattern", "**")
        count = 0
        for name, folder in build.artifacts.items():
            if build.kind[name] != kind:
                continue
            for file in folder.rglob("*"):
                relative = f"{name}/{file.relative_to(folder).as_posix()}"
                if file.is_file() and fnmatch.fnmatch(relative, pattern.replace("/**", "/*")):
                    (target / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, target / relative)
                    count += 1
        return f"Downloaded {count} files of build {build.id} ({build.result})"

    def publish(self, task: str, inputs: dict[str, str]) -> str:
        pipeline_artifacts = task == "PublishPipelineArtifact@1"
        if pipeline_artifacts and self.org.server:
            raise TaskFailed("##[error]OnPremIsNotSupported")
        name = inputs["artifact"] if pipeline_artifacts else inputs["ArtifactName"]
        source = Path(inputs["targetPath"] if pipeline_artifacts else inputs["PathtoPublish"])
        if name in self.build.artifacts:
            raise TaskFailed(f"##[error]Artifact {name} already exists for build {self.build.id}.")
        if not source.exists():
            raise TaskFailed(f"##[error]Path does not exist: {source}")
        self.build.artifacts[name] = self.org.store(source)
        self.build.kind[name] = "pipeline" if pipeline_artifacts else "build"
        return f"Published {name}"
