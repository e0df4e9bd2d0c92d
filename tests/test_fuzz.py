"""Seeded fuzzing of the example project: mutated config, flows, data, cassettes and state never crash or hang.

Each case copies examples/web-classification, applies one or two seeded mutations (a hostile YAML
value, a deleted or renamed key, an inserted snippet, a truncation, garbage bytes, a hostile data
line, a FIFO, a symlink to /dev/zero, a folder where a file was) and runs the steps that read what
was mutated: ``lint``, ``batch-run`` up to the backend (a stand-in backend registered in the plain
dict registry refuses to run, so no executor starts), ``deploy --dry-run``, ``gate`` and ``comment``.
Every step must end with one of the documented exit codes for expected outcomes (0-3), print no
traceback, and finish within a bound (an interval timer interrupts a blocked read).

A failing case prints its seed: ``pytest tests/test_fuzz.py -k 'seed_137'`` is not needed, run
``python -m tests.test_fuzz 137`` to replay one case and keep its project folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import yaml

from llmops_ci.cli import main
from llmops_ci.core.errors import CheckFailed, LlmopsError
from llmops_ci.engines.base import Backend
from llmops_ci.llm.cassette import Cassette
from llmops_ci.runs import BACKENDS

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "web-classification"
CASES = 300
CASE_SECONDS = 10  # a bound for one step, far above what a case takes (~0.1 s)
EXPECTED_CODES = {0, 1, 2, 3}

YAML_FILES = ("llmops.yaml", "runs/classify.run.yml", "flows/classify/flow.dag.yaml",
              "flows/eval-accuracy/flow.dag.yaml")
TEXT_FILES = ("flows/classify/clean_text.py", "flows/classify/convert_to_dict.py",
              "flows/classify/classify_with_llm.jinja2", "flows/eval-accuracy/grade.py",
              "flows/eval-accuracy/calculate_accuracy.py", "flows/classify/requirements.txt")
DATA_FILES = ("data/classify.jsonl",)
JSON_FILES = ("cassettes/classify.json", "tests/smoke/basic.json")

HOSTILE_VALUES: list[Any] = [
    None, "", " ", 0, -1, 50, 10 ** 30, 2 ** 63, "abc", "a/b", "../../x", "/etc/passwd", "${data.}", "${data.nope}",
    "${run.outputs.}", "${run.inputs.x}", "${env:}", "${env:NOPE_NOT_SET}", "${", "${inputs.}", "${classify.output",
    float("nan"), float("inf"), -0.0, True, False, [], {}, [1, "x", None], {"a": 1}, {"when": {"a": 1}, "is": 1},
    "x\n::error::pwned", "##vso[task.setvariable variable=x]y", "é☃\u202e", "x" * 5000, [[[[[[[1]]]]]]],
    "flows/classify/flow.dag.yaml", "data/classify.jsonl", "tests/smoke/*.json", "data", "cassettes", "llmops.yaml",
    [10, 50], [100, 10], [0, 100], ["x"], "*.json", "${classify_with_llm.variant_9}", "gpt-4o-mini",
]
HOSTILE_KEYS = ["", "x", "pathh", "dataa", "x\n::error::k", "../k", "123", "true", "${data.x}", "nodes ", "é"]
SNIPPETS = [
    "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)),
    "loop: &loop [*loop]\n", "loopmap: &m {<<: *m}\n", "huge: " + "9" * 5000 + "\n", "<<<<<<< HEAD\n", "=======\n",
    ">>>>>>> branch\n", "\t\tbad: indent\n", "\x00", "\ufeff", "key: [unclosed\n", "{{ broken\n", "{% for x in %}\n",
    "def f(:\n", "@tool\ndef g(x, /):\n    return x\n", "[" * 3000 + "\n", '"\\ud800"\n', "- - - -\n", "? [a]\n: b\n",
    "when: 2001-13-45\n", "&anchor\n", "*undefined\n", "!!python/object:os.system x\n", "---\nsecond: doc\n",
]
DATA_LINES = [
    "[1, 2, 3]", '"text"', "null", "{", '{"text": "' + "x" * 20000 + '"}', '{"text": ' + "1" * 5000 + "}",
    "[" * 50000 + "]" * 50000, '{"text": "\\ud800", "url": "u", "label": "App"}', "\ufeff" + '{"text": "a"}',
    json.dumps({f"k{i}": i for i in range(5000)}), '{"url": "u"}', '{"text": null, "url": 1, "label": []}',
    "\x00\x01", '{"url": "x", "text": "x\\n::error::injected", "label": "App"}', "",
]


@dataclass
class Case:
    seed: int
    root: Path
    notes: list[str] = field(default_factory=list)
    touches_state: bool = False


class CaseTimeout(Exception):
    pass


class RefusingBackend(Backend):
    """Registered in place of the local backend: the fuzz stops where an executor would start."""

    name = "fuzz"
    routes_local_proxy = False

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise CheckFailed("fuzz: the run reached the backend (no executor in the fuzz test)")

    def test(self, *args: Any, **kwargs: Any) -> Any:
        raise CheckFailed("fuzz: the run reached the backend (no executor in the fuzz test)")


# --- mutations ------------------------------------------------------------------------------------------

def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


def _mutate_tree(rng: random.Random, data: Any) -> tuple[Any, str]:
    paths = [p for p in _paths(data) if p]
    if not paths:
        return rng.choice(HOSTILE_VALUES), "root replaced"
    path = rng.choice(paths)
    parent, last = _parent(data, path), path[-1]
    action = rng.choice(("value", "value", "value", "delete", "rename", "duplicate"))
    if action == "delete":
        del parent[last]
    elif action == "rename" and isinstance(parent, dict):
        parent[rng.choice(HOSTILE_KEYS)] = parent.pop(last)
    elif action == "duplicate" and isinstance(parent, list):
        parent.append(parent[last])
    else:
        parent[last] = rng.choice(HOSTILE_VALUES)
    return data, f"{action} at {list(path)}"


def _yaml_tree(rng: random.Random, file: Path) -> str:
    try:
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=_LOADER)
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return "unparsable already"
    data, what = _mutate_tree(rng, data)
    file.write_text(yaml.dump(data, Dumper=_DUMPER, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return what


def _json_tree(rng: random.Random, file: Path) -> str:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return "unparsable already"
    data, what = _mutate_tree(rng, data)
    file.write_text(json.dumps(data), encoding="utf-8")
    return what


def _insert(rng: random.Random, file: Path) -> str:
    lines = file.read_text(encoding="utf-8", errors="surrogateescape").splitlines(keepends=True)
    at = rng.randrange(len(lines) + 1)
    snippet = rng.choice(SNIPPETS)
    lines.insert(at, snippet)
    file.write_text("".join(lines), encoding="utf-8", errors="surrogateescape")
    return f"inserted {snippet[:30]!r} at line {at + 1}"


def _truncate(rng: random.Random, file: Path) -> str:
    raw = file.read_bytes()
    cut = rng.randrange(len(raw) + 1)
    file.write_bytes(raw[:cut])
    return f"truncated at byte {cut}"


def _garble(rng: random.Random, file: Path) -> str:
    raw = bytearray(file.read_bytes())
    for _ in range(rng.randint(1, 5)):
        if raw:
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    file.write_bytes(bytes(raw))
    return "garbled bytes"


def _data_line(rng: random.Random, file: Path) -> str:
    lines = file.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    line = rng.choice(DATA_LINES)
    if lines and rng.random() < 0.5:
        at = rng.randrange(len(lines))
        lines[at] = line
    else:
        at = rng.randrange(len(lines) + 1)
        lines.insert(at, line)
    file.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")
    return f"data line {at + 1} = {line[:30]!r}"


def _filesystem(rng: random.Random, file: Path) -> str:
    kind = rng.choice(("fifo", "devzero", "folder", "empty", "missing", "loop"))
    if file.is_dir() and not file.is_symlink():
        shutil.rmtree(file)
    else:
        file.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(file)
    elif kind == "devzero":
        file.symlink_to("/dev/zero")
    elif kind == "folder":
        file.mkdir()
    elif kind == "empty":
        file.write_text("")
    elif kind == "loop":
        file.symlink_to(file.name)
    return f"replaced by {kind}"


MUTATORS: list[tuple[tuple[str, ...], Callable[[random.Random, Path], str]]] = [
    (YAML_FILES, _yaml_tree), (YAML_FILES, _yaml_tree), (YAML_FILES, _yaml_tree), (YAML_FILES + TEXT_FILES, _insert),
    (YAML_FILES + TEXT_FILES + DATA_FILES, _truncate), (YAML_FILES + DATA_FILES, _garble), (DATA_FILES, _data_line),
    (DATA_FILES, _data_line), (JSON_FILES, _json_tree), (JSON_FILES, _truncate), (JSON_FILES + DATA_FILES +
     YAML_FILES[1:] + TEXT_FILES, _filesystem),
]


def _state(rng: random.Random, root: Path) -> str:
    """A state dir as earlier steps leave it, then damaged: the gate and comment read it."""
    lines = [{"line": i, "status": "Completed", "outputs": {"correct": rng.choice([0, 1])}} for i in range(12)]
    summary: dict[str, Any] = {"schema": "llmops-ci/summary@1", "flows": {"classify": {
        "run": {"name": "r", "status": "completed", "lines_total": 12, "lines_failed": 0, "latency_p95": 1.0},
        "evaluations": {"accuracy": {"run": "e", "status": "completed", "metrics": {"accuracy": 0.9}}}}}}
    summary, what = _mutate_tree(rng, summary)
    state = root / ".llmops"
    for folder in (state, root / "base"):
        (folder / "runs" / "classify" / "evals" / "accuracy").mkdir(parents=True, exist_ok=True)
        (folder / "runs" / "classify" / "evals" / "accuracy" / "lines.jsonl").write_text(
            "".join(json.dumps(line) + "\n" for line in lines))
    (state / "summary.json").write_text(json.dumps(summary))
    base_lines = root / "base" / "runs" / "classify" / "evals" / "accuracy" / "lines.jsonl"
    if rng.random() < 0.5:
        _truncate(rng, base_lines)
    (root / "base" / "summary.json").write_text(json.dumps(
        {"schema": "llmops-ci/summary@1", "flows": {"classify": {"evaluations": {"accuracy": {"metrics": {
            "accuracy": rng.choice([0.95, float("nan"), None, "x", 1e308])}}}}}}))
    return f"state: {what}"


def make_case(seed: int, root: Path) -> Case:
    rng = random.Random(seed)
    shutil.copytree(EXAMPLE, root, symlinks=True)
    case = Case(seed, root)
    if rng.random() < 0.2:
        case.notes.append(_state(rng, root))
        case.touches_state = True
        return case
    for _ in range(rng.choice((1, 1, 2))):
        files, mutate = rng.choice(MUTATORS)
        name = rng.choice(files)
        target = root / name
        if not target.is_file() or target.is_symlink():
            case.notes.append(f"{name}: skipped (already replaced)")
            continue
        case.notes.append(f"{name}: {mutate(rng, target)}")
    return case


# --- running ----------------------------------------------------------------------------------------------

def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise CaseTimeout


@contextlib.contextmanager
def bounded(seconds: float) -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_step(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        except CaseTimeout:
            raise
        except Exception as exc:
            import traceback

            lines = traceback.format_exception(exc)
            return 99, err.getvalue() + "".join(line[:300] for line in lines[-12:])
    return code, out.getvalue() + err.getvalue()


def check_case(case: Case) -> list[str]:
    """Runs the steps on the case; returns what went wrong (nothing when every step behaved)."""
    problems = []
    # batch-run alternates: replaying (env not needed, stops at the backend) and not (stops at the unset env)
    batch = ["batch-run", "--flow", "classify"] if case.seed % 2 else ["batch-run", "--llm-cache", "off"]
    steps: list[list[str]] = [["gate", "--baseline", "base"], ["comment", "--platform", "local"]] \
        if case.touches_state else [["lint"], batch]
    if not case.touches_state and case.seed % 3 == 0:
        steps.append(["deploy", "--dry-run", "--flow", "classify"])
    for argv in steps:
        try:
            with bounded(CASE_SECONDS):
                code, output = run_step([*argv, "--comment", "off"] if argv[0] != "comment" else argv)
        except CaseTimeout:
            problems.append(f"{' '.join(argv)}: still running after {CASE_SECONDS} s")
            continue
        if code not in EXPECTED_CODES or "Traceback" in output:
            problems.append(f"{' '.join(argv)}: exit {code}\n{output[-4000:]}")
    cassette = case.root / "cassettes" / "classify.json"
    try:
        with bounded(CASE_SECONDS):
            Cassette.load(cassette)
    except LlmopsError:
        pass
    except CaseTimeout:
        problems.append("Cassette.load: still running")
    except Exception as exc:
        problems.append(f"Cassette.load: {type(exc).__name__}: {exc}")
    return problems


@pytest.fixture
def fuzz_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GITHUB_ACTIONS", "TF_BUILD", "OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(BACKENDS, "local", lambda *args, **kwargs: RefusingBackend())


def test_mutated_example_never_crashes_or_hangs(fuzz_env: None, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    failures = []
    for seed in range(CASES):
        root = tmp_path / f"case{seed}"
        case = make_case(seed, root)
        monkeypatch.chdir(root)
        problems = check_case(case)
        if problems:
            failures.append(f"seed {seed} ({'; '.join(case.notes)}):\n  " + "\n  ".join(problems))
        monkeypatch.chdir(tmp_path)
        shutil.rmtree(root, ignore_errors=True)
    assert not failures, f"{len(failures)} of {CASES} cases misbehaved:\n\n" + "\n\n".join(failures[:10])


if __name__ == "__main__":  # replay one case: python -m tests.test_fuzz SEED
    seed = int(sys.argv[1])
    where = Path(tempfile.mkdtemp(prefix=f"fuzz-{seed}-")) / "project"
    replay = make_case(seed, where)
    BACKENDS["local"] = lambda *args, **kwargs: RefusingBackend()
    os.chdir(where)
    print(f"seed {seed}: {'; '.join(replay.notes)}\nproject: {where}")
    print("\n".join(check_case(replay)) or "no problem")
