#!/usr/bin/env python3
"""Benchmark ``llmops-ci batch-run`` against ``pf run create`` on one LLM flow and a fake OpenAI server.

    python bench/batch_bench.py [--lines 200] [--latency 0.1] [--workers 8] [--runs 2] [--python PATH] [--skip-pf]

What it does:

1. Writes a project in a temporary folder: one flow with one LLM node (api chat, connection ``openai``,
   ``model: gpt-4o-mini``, a tiny Jinja2 prompt on ``{{question}}``), a JSONL data file of --lines lines
   and an ``llmops.yaml`` whose ``openai`` connection reads ``${env:OPENAI_BASE_URL}`` and
   ``${env:OPENAI_API_KEY}``.
2. Starts ``tests.fakes.openai.FakeOpenAI`` in this process with a fixed latency per call.
3. Times the whole ``python -m llmops_ci batch-run --workers W`` process --runs times (a fresh state dir
   each time); checks exit 0, the summary's line counts and that the server saw one call per line.
4. Prints the ideal time (lines x latency / workers) and the overhead over it.
5. Times ``pf run create`` with ``PF_WORKER_COUNT`` = --workers (a private, hermetic PF home; the ``openai`` connection
   created first with ``pf connection create``, timed separately) on a copy of the flow, checks its line
   counts and the server's calls, and looks for processes it left behind (killed and reported).
6. Prints a closing block with the headline numbers and where llmops-ci's time goes.
7. Stops the server, deletes the temporary folder and makes sure no process it started is left.

Since the warm executor (issue #14) llmops-ci keeps no pf run folder, so its part of the timeline shows only
the server's arrivals and the state dir's files; bench/executor_bench.py is the side-by-side benchmark.

Standard library only (plus the repo's tests/fakes/openai.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from _harness import _alive, find_pf, kill_pids, processes_mentioning, run_timed, tail

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fakes.openai import FakeOpenAI  # noqa: E402

FLOW_DAG = """\
$schema: https://azuremlschemas.azureedge.net/promptflow/latest/Flow.schema.json
inputs:
  question:
    type: string
outputs:
  answer:
    type: string
    reference: ${answer.output}
nodes:
- name: answer
  type: llm
  source:
    type: code
    path: answer.jinja2
  connection: openai
  api: chat
  inputs:
    model: gpt-4o-mini
    question: ${inputs.question}
"""
PROMPT = "# system:\nAnswer in one short sentence.\n# user:\n{{question}}\n"
LLMOPS_YAML = """\
version: 1
connections:
  openai:
    type: open_ai
    base_url: ${env:OPENAI_BASE_URL}
    api_key: ${env:OPENAI_API_KEY}
flows:
  bench:
    path: flows/bench
    data: data/bench.jsonl
    column_mapping:
      question: ${data.question}
"""
CONN_YAML = """\
$schema: https://azuremlschemas.azureedge.net/promptflow/latest/OpenAIConnection.schema.json
name: openai
type: open_ai
api_key: dummy
base_url: {base_url}
"""
PF_YAML = """\
telemetry:
  enabled: false
trace:
  destination: none
cli:
  installation_id: 00000000-0000-0000-0000-000000000000
"""
WORKERS = [8]  # --workers, also given to pf run create as PF_WORKER_COUNT
# variables of the caller that would point a run somewhere else or change pf's defaults
DROP_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "PF_HOME_DIRECTORY",
            "PF_CONNECTION_PROVIDER", "PF_WORKER_COUNT", "PF_LINE_TIMEOUT_SEC", "PF_BATCH_TIMEOUT_SEC")


class TimedFakeOpenAI(FakeOpenAI):
    """FakeOpenAI that also keeps the wall-clock arrival time of every request (for the breakdown)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[float] = []
        self._lock = threading.Lock()

    def handle(self, handler: Any) -> None:
        with self._lock:
            self.arrivals.append(time.time())
        super().handle(handler)


# -- helpers ----------------------------------------------------------------------------------------------


def write_project(root: Path, lines: int) -> Path:
    flow = root / "flows" / "bench"
    flow.mkdir(parents=True)
    (flow / "flow.dag.yaml").write_text(FLOW_DAG, encoding="utf-8")
    (flow / "answer.jinja2").write_text(PROMPT, encoding="utf-8")
    (root / "data").mkdir()
    with (root / "data" / "bench.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(lines):
            fh.write(json.dumps({"question": f"Question number {i}: what is {i} + {i}?"}) + "\n")
    cfg = root / "llmops.yaml"
    cfg.write_text(LLMOPS_YAML, encoding="utf-8")
    return cfg


def leftovers(needle: str, label: str, notes: list[str]) -> None:
    """Report and kill processes still carrying ``needle`` in their environment (give them 2 s to exit)."""
    deadline = time.monotonic() + 2
    found = processes_mentioning(needle, env_entry=True)
    while found and time.monotonic() < deadline:
        time.sleep(0.2)
        found = processes_mentioning(needle, env_entry=True)
    if found:
        notes.append(f"{label}: {len(found)} process(es) still running after it exited (killed):")
        notes += [f"    pid {pid}: {cmd[:160]}" for pid, cmd in found]
        kill_pids([pid for pid, _ in found])


def mtime(path: Path) -> float | None:
    with contextlib.suppress(OSError):
        return path.stat().st_mtime
    return None


@dataclass
class RunFolder:
    """What a prompt flow run folder (``<home>/.runs/<name>``) tells: line counts and timings."""

    lines: int = 0
    failed: int = 0
    durations: list[float] = field(default_factory=list)
    done_times: list[float] = field(default_factory=list)  # mtime of each line's record
    process_count: str | None = None

    @classmethod
    def read(cls, run_dir: Path) -> RunFolder:
        rf = cls()
        for path in sorted((run_dir / "flow_artifacts").glob("*.jsonl")):
            t = mtime(path)
            for raw in path.read_text(encoding="utf-8").splitlines():
                if not raw.strip():
                    continue
                info = json.loads(raw).get("run_info") or {}
                rf.lines += 1
                rf.failed += str(info.get("status")) != "Completed"
                duration = (info.get("system_metrics") or {}).get("duration")
                if isinstance(duration, (int, float)):
                    rf.durations.append(float(duration))
                if t is not None:
                    rf.done_times.append(t)
        logs = run_dir / "logs.txt"
        if logs.is_file():
            found = re.search(r"Set process count to (\d+)[^\n]*", logs.read_text(encoding="utf-8", errors="replace"))
            if found:
                rf.process_count = found.group(1)
        return rf


def timeline(label: str, wall: float, seconds: float, arrivals: list[float], latency: float, rf: RunFolder,
             marks: list[tuple[str, float | None]]) -> list[str]:
    """Offsets from the process start of: the given file marks, first/last LLM call, first/last line done."""
    points: list[tuple[float, str]] = [(t - wall, name) for name, t in marks if t is not None]
    if arrivals:
        points += [(min(arrivals) - wall, "first LLM request reaches the server"),
                   (max(arrivals) - wall, "last LLM request reaches the server")]
    if rf.done_times:
        points += [(min(rf.done_times) - wall, "first line record written"),
                   (max(rf.done_times) - wall, "last line record written")]
    points.append((seconds, "process exit"))
    points.sort()
    out = [f"  {label} timeline (s from process start; file mtimes and server arrival times):"]
    prev = 0.0
    for t, name in points:
        out.append(f"    {t:6.2f}  (+{t - prev:5.2f})  {name}")
        prev = t
    if len(arrivals) > 1:
        span = max(arrivals) - min(arrivals) + latency
        out.append(f"    LLM phase: {len(arrivals)} calls in {span:.2f} s = {len(arrivals) / span:.0f} calls/s")
    if rf.durations:
        d = sorted(rf.durations)
        out.append(f"    line duration inside pf: p50 {d[len(d) // 2]:.3f} s, p95 {d[int(len(d) * 0.95)]:.3f} s, "
                   f"max {d[-1]:.3f} s (the server sleeps {latency:.3f} s)")
    return out


def cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# -- llmops-ci ---------------------------------------------------------------------------------------------


@dataclass
class Measure:
    seconds: float = 0.0
    wall_start: float = 0.0
    code: int | None = None
    cpu: float = 0.0  # user+sys seconds of the process tree (children that were waited for)
    requests: int = 0
    arrivals: list[float] = field(default_factory=list)
    run: RunFolder | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def run_llmops(args: argparse.Namespace, cfg: Path, tmp: Path, fake: TimedFakeOpenAI, index: int) -> Measure:
    m = Measure()
    state = tmp / f"state{index}"
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    env.update(OPENAI_BASE_URL=f"{fake.url}/v1", OPENAI_API_KEY="dummy")
    cmd = [args.python, "-m", "llmops_ci", "batch-run", "--config", str(cfg), "--workers", str(args.workers),
           "--state-dir", str(state)]
    out = tmp / f"llmops{index}.out"
    before, cpu = len(fake.requests), cpu_children()
    m.seconds, m.wall_start, m.code = run_timed(cmd, env, REPO, out)
    m.cpu = cpu_children() - cpu
    m.requests = len(fake.requests) - before
    m.arrivals = fake.arrivals[before:]
    if m.code != 0:
        m.problems.append(f"exit {m.code} (expected 0): {' '.join(cmd)}\n{tail(out)}")
    name = None
    try:
        run = json.loads((state / "summary.json").read_text(encoding="utf-8"))["flows"]["bench"]["run"]
        name = run.get("name")
        total, failed = run.get("lines_total"), run.get("lines_failed")
        if (total, failed) != (args.lines, 0):
            m.problems.append(f"summary.json says {total} lines, {failed} failed (expected {args.lines}, 0); "
                              f"status {run.get('status')}, errors {str(run.get('errors'))[:300]}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        m.problems.append(f"no usable {state / 'summary.json'}: {type(exc).__name__}: {exc}")
    if m.requests != args.lines:
        m.problems.append(f"the fake server got {m.requests} requests (expected {args.lines})")
    left: list[str] = []
    leftovers(f"LLMOPS_CI_STATE_DIR={state}", f"llmops-ci run {index}", left)
    m.problems += left
    if name:
        run_dir = state / "pf-home" / ".runs" / name
        m.run = RunFolder.read(run_dir)
        m.notes.append(f"  pf inside llmops-ci: {m.run.lines} line records, {m.run.failed} not completed; "
                       f"'Set process count to {m.run.process_count}'; CPU {m.cpu:.1f} s on {os.cpu_count()} CPUs")
        m.notes += timeline(f"run {index}", m.wall_start, m.seconds, m.arrivals, args.latency, m.run, [
            ("pf run folder created (.runs/<name>/meta.json)", mtime(run_dir / "meta.json")),
            ("runner log last written (worker pool shut down)", mtime(state / "logs" / f"{name}.log")),
            ("pf run finalized (.runs/<name>/outputs.jsonl)", mtime(run_dir / "outputs.jsonl")),
            ("pf.sqlite last written (run record, connection deleted)", mtime(state / "pf-home" / "pf.sqlite")),
            ("llmops-ci wrote runs/bench/lines.jsonl", mtime(state / "runs" / "bench" / "lines.jsonl")),
            ("llmops-ci wrote summary.json", mtime(state / "summary.json")),
        ])
    return m


# -- pf run create -------------------------------------------------------------------------------------------


@dataclass
class PfMeasure(Measure):
    conn_seconds: float | None = None
    conn_code: int | None = None
    left: list[str] = field(default_factory=list)  # processes pf left running (killed), reported not failed


def pf_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    env.update({
        "PF_HOME_DIRECTORY": str(home),
        "PF_TRACING_SKIP_LOCAL_SETUP": "true",
        "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
        "XDG_DATA_HOME": str(home / "xdg-data"),
        "XDG_CONFIG_HOME": str(home / "xdg-config"),
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
        "TMPDIR": str(home / "tmp"),
        "PYTHONIOENCODING": "utf-8",
        "PF_WORKER_COUNT": str(WORKERS[0]),  # the same concurrency as llmops-ci's --workers
    })
    return env


def run_pf(args: argparse.Namespace, pf: str, project: Path, tmp: Path, fake: TimedFakeOpenAI) -> PfMeasure:
    m = PfMeasure()
    home = tmp / "pfh"
    for sub in ("tmp", "xdg-data", "xdg-config"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    (home / "pf.yaml").write_text(PF_YAML, encoding="utf-8")
    env = pf_env(home)
    needle = f"PF_HOME_DIRECTORY={home}"

    conn = tmp / "conn.yaml"
    conn.write_text(CONN_YAML.format(base_url=f"{fake.url}/v1"), encoding="utf-8")
    conn_cmd = [pf, "connection", "create", "--file", str(conn)]
    m.conn_seconds, _, m.conn_code = run_timed(conn_cmd, env, tmp, tmp / "pf-conn.out")
    leftovers(needle, "pf connection create", m.left)
    if m.conn_code != 0:
        m.problems.append(f"exit {m.conn_code}: {' '.join(conn_cmd)}\n{tail(tmp / 'pf-conn.out')}")
        return m

    flow = tmp / "pf-flow" / "bench"  # pf writes into the flow folder: run a copy
    shutil.copytree(project / "flows" / "bench", flow)
    name = f"bench_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"
    cmd = [pf, "run", "create", "--flow", str(flow), "--data", str(project / "data" / "bench.jsonl"),
           "--column-mapping", "question=${data.question}", "--name", name]
    out = tmp / "pf-run.out"
    before, cpu = len(fake.requests), cpu_children()
    m.seconds, m.wall_start, m.code = run_timed(cmd, env, tmp, out)
    m.cpu = cpu_children() - cpu
    m.requests = len(fake.requests) - before
    m.arrivals = fake.arrivals[before:]
    leftovers(needle, "pf run create", m.left)
    if m.code != 0:
        m.problems.append(f"exit {m.code}: {' '.join(cmd)}\n{tail(out)}")

    run_dir = home / ".runs" / name
    m.run = RunFolder.read(run_dir)
    if (m.run.lines, m.run.failed) != (args.lines, 0):
        m.problems.append(f"pf run {name}: {m.run.lines} line records, {m.run.failed} not completed "
                          f"(expected {args.lines}, 0) in {run_dir / 'flow_artifacts'}")
    if m.requests != args.lines:
        m.problems.append(f"the fake server got {m.requests} requests during pf run create (expected {args.lines})")
    # pf's own view: the run JSON that pf run create prints last (status, created_on, duration, tokens)
    text = out.read_text(encoding="utf-8", errors="replace")
    printed: dict[str, Any] = {}
    for found in re.finditer(r"^\{", text, re.M):
        with contextlib.suppress(ValueError):
            printed = json.JSONDecoder().raw_decode(text, found.start())[0]
    metrics = (printed.get("properties") or {}).get("system_metrics") or {}
    created = None
    with contextlib.suppress(TypeError, ValueError):
        created = datetime.fromisoformat(str(printed.get("created_on"))).timestamp()
    m.notes.append(f"  pf says: status {printed.get('status')}, run duration {metrics.get('duration')} s, "
                   f"{metrics.get('total_tokens')} tokens; 'Set process count to {m.run.process_count}'; "
                   f"CPU {m.cpu:.1f} s on {os.cpu_count()} CPUs")
    m.notes += timeline("pf run create", m.wall_start, m.seconds, m.arrivals, args.latency, m.run, [
        ("pf run created (created_on in the run JSON pf prints)", created),
        ("pf run finalized (.runs/<name>/outputs.jsonl)", mtime(run_dir / "outputs.jsonl")),
        ("pf.sqlite last written (run record)", mtime(home / "pf.sqlite")),
    ])
    return m


# -- main ---------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per fake LLM call")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=2, help="llmops-ci batch-run repetitions")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--skip-pf", action="store_true", help="do not run the pf run create comparison")
    args = parser.parse_args()
    WORKERS[0] = args.workers

    tmp = Path(tempfile.mkdtemp(prefix="bb-"))  # short: pf's TMPDIR below it holds Unix sockets
    fake = TimedFakeOpenAI(latency=args.latency)
    fake.start()
    problems: list[str] = []
    try:
        project = tmp / "project"
        cfg = write_project(project, args.lines)
        print(f"project: {project} ({args.lines} lines); fake OpenAI at {fake.url} with {args.latency:.3f} s "
              f"latency; python {args.python}")

        results: list[Measure] = []
        for i in range(1, args.runs + 1):
            m = run_llmops(args, cfg, tmp, fake, i)
            results.append(m)
            print(f"llmops-ci batch-run run {i}: {m.seconds:.2f} s, exit {m.code}, {m.requests} requests"
                  + ("" if m.ok else "  ** PROBLEM **"))
            for line in m.notes:
                print(line)
            for p in m.problems:
                print("  PROBLEM: " + p)
                problems.append(f"llmops-ci run {i}: {p}")

        pf_m: PfMeasure | None = None
        pf = find_pf(args.python)
        if args.skip_pf:
            print("pf run create: skipped (--skip-pf)")
        elif pf is None:
            print(f"pf not found next to {args.python} nor on PATH: the pf run create comparison was skipped")
        else:
            pf_m = run_pf(args, pf, project, tmp, fake)
            print(f"pf connection create: {pf_m.conn_seconds:.2f} s, exit {pf_m.conn_code}")
            if pf_m.code is not None:
                run = pf_m.run or RunFolder()
                print(f"pf run create: {pf_m.seconds:.2f} s, exit {pf_m.code}, {pf_m.requests} requests, "
                      f"{run.lines} line records, {run.failed} not completed" + ("" if pf_m.ok else "  ** PROBLEM **"))
            for line in pf_m.notes:
                print(line)
            for line in pf_m.left:
                print("  LEFTOVER: " + line)
            for p in pf_m.problems:
                print("  PROBLEM: " + p)
                problems.append(f"pf: {p}")

        # closing block
        times = [m.seconds for m in results]
        best = min(times)
        ideal = args.lines * args.latency / args.workers
        overhead = best - ideal
        print()
        print(f"llmops-ci batch-run --workers {args.workers}: best {best:.2f} s (runs: "
              f"{', '.join(f'{t:.2f}' for t in times)}) for {args.lines} lines x {args.latency:g} s"
              + ("" if all(m.ok for m in results) else "  [some runs had problems, see above]"))
        print(f"ideal ({args.lines} x {args.latency:g} s / {args.workers} workers): {ideal:.2f} s -> overhead "
              f"{overhead:.2f} s (goal < 3 s: {'PASS' if overhead < 3 else 'FAIL'})")
        if pf_m is not None and pf_m.code is not None:
            ratio = pf_m.seconds / best
            workers = (pf_m.run.process_count if pf_m.run else None) or "unknown"
            pf_ideal = (f" (its ideal: {args.lines} x {args.latency:g} s / {workers} = "
                        f"{args.lines * args.latency / int(workers):.2f} s)" if workers.isdigit() else "")
            print(f"pf run create (PF_WORKER_COUNT={args.workers}): {pf_m.seconds:.2f} s -> llmops-ci is "
                  f"{ratio:.1f}x faster "
                  f"(goal: faster: {'PASS' if pf_m.seconds > best else 'FAIL'})"
                  + ("" if pf_m.ok else "  [pf run had problems, see above]"))
            print(f"pf default worker count: {workers}{pf_ideal}; pf connection create: {pf_m.conn_seconds:.2f} s "
                  f"(not counted)")
            print("pf left processes running (killed, see LEFTOVER above)" if pf_m.left
                  else "pf connection create / pf run create left no process running")
        if problems:
            print(f"\n{len(problems)} problem(s), see above.")
        return 1 if problems else 0
    finally:
        fake.stop()
        stray = []  # anything with a PF home under our temp dir (a prefix match, unlike procs_with_env)
        for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                environ = (entry / "environ").read_bytes()
                ours = any(f"{var}={tmp}".encode() in environ for var in ("PF_HOME_DIRECTORY", "LLMOPS_CI_STATE_DIR"))
                if ours and _alive(int(entry.name)):
                    stray.append(int(entry.name))
        if stray:
            print(f"cleanup: killing {len(stray)} leftover process(es): {stray}")
            kill_pids(stray)
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"cleanup: fake server stopped, {tmp} deleted"
              + ("" if stray else ", no process with a PF home under it left"))


if __name__ == "__main__":
    sys.exit(main())
