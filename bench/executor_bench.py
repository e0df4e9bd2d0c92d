#!/usr/bin/env python3
"""The warm executor against ``pf run create`` at the same concurrency, and against the ideal N x L / C.

    python bench/executor_bench.py [--sizes 20,200,2000] [--latency 0.1] [--workers 8] [--runs 3]
                                   [--pr-lines 50] [--skip-pf] [--python PATH]

Prints, in one run, side by side:

1. ``llmops-ci batch-run --workers C`` and ``pf run create`` with ``PF_WORKER_COUNT=C`` (a private, hermetic
   PF home; its connection created first, not timed) on one flow with one LLM node, for each size: median of
   --runs (pf: one run per size, it is the slow one), the ideal N x L / C, and the peak RSS of the whole
   process tree (the command and all its descendants, sampled every 20 ms). Then the least-squares fit
   time = fixed + per_line x N of each tool.
2. ``pr --llm-cache replay`` of a 5-flow project (each flow --pr-lines lines and one evaluation) against a
   1-flow one (cassettes recorded first with ``pr --llm-cache record``): the cost of each additional flow.
3. ``batch-run --llm-cache record`` against ``--llm-cache replay`` for 200 lines, with the upstream calls
   during the replay (goal 0).
4. The example's ``pr`` (README's main command, replayed from its committed cassettes).

The LLM server is tests/fake_openai.py (stdlib ThreadingHTTPServer, TCP_NODELAY, headers and body in one
segment) in this process, sleeping --latency per call. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _harness import find_pf, kill_pids, processes_mentioning, tail

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fake_openai import FakeOpenAI  # noqa: E402

FLOW = """\
inputs:
  question: {type: string}
outputs:
  answer: {type: string, reference: "${answer.output}"}
nodes:
- name: answer
  type: llm
  source: {type: code, path: answer.jinja2}
  connection: openai
  api: chat
  inputs: {model: gpt-4o-mini, question: "${inputs.question}"}
"""
EVAL = """\
inputs:
  answer: {type: string}
outputs:
  score: {type: double, reference: "${score.output}"}
nodes:
- name: score
  type: python
  source: {type: code, path: score.py}
  inputs: {answer: "${inputs.answer}"}
- name: rate
  type: python
  source: {type: code, path: rate.py}
  inputs: {scores: "${score.output}"}
  aggregation: true
"""
SCORE = ("from promptflow.core import tool\n\n\n@tool\ndef score(answer: str) -> float:\n"
         "    return float(len(answer) > 5)\n")
RATE = ("from promptflow.core import log_metric, tool\n\n\n@tool\ndef rate(scores: list) -> float:\n"
        "    log_metric('rate', sum(scores) / len(scores))\n    return 0.0\n")
PROMPT = "# system:\nAnswer in one short sentence.\n# user:\n{{question}}\n"
CONN_YAML = "name: openai\ntype: open_ai\napi_key: dummy\nbase_url: {base_url}\n"
PF_YAML = "telemetry: {enabled: false}\ntrace: {destination: none}\n"
DROP_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "PF_HOME_DIRECTORY",
            "PF_CONNECTION_PROVIDER", "PF_WORKER_COUNT", "PF_LINE_TIMEOUT_SEC", "GITHUB_ACTIONS", "TF_BUILD")


def write_project(root: Path, flows: int, lines: int, evaluations: bool) -> Path:
    config = ["version: 1", "connections:", "  openai:", "    type: open_ai",
              "    base_url: ${env:OPENAI_BASE_URL}", "    api_key: ${env:OPENAI_API_KEY}", "flows:"]
    for f in range(flows):
        folder = root / "flows" / f"f{f}"
        folder.mkdir(parents=True)
        (folder / "flow.dag.yaml").write_text(FLOW, encoding="utf-8")
        (folder / "answer.jinja2").write_text(PROMPT, encoding="utf-8")
        data = root / "data" / f"f{f}.jsonl"
        data.parent.mkdir(exist_ok=True)
        data.write_text("".join(json.dumps({"question": f"flow {f}, question {i}: what is {i} + {i}?"}) + "\n"
                                for i in range(lines)), encoding="utf-8")
        config += [f"  f{f}:", f"    path: flows/f{f}", f"    data: data/f{f}.jsonl",
                   "    column_mapping:", "      question: ${data.question}"]
        if evaluations:
            config += ["    evaluations:", "      score:", "        path: flows/eval",
                       "        column_mapping:", "          answer: ${run.outputs.answer}"]
    if evaluations:
        folder = root / "flows" / "eval"
        folder.mkdir(parents=True)
        (folder / "flow.dag.yaml").write_text(EVAL, encoding="utf-8")
        (folder / "score.py").write_text(SCORE, encoding="utf-8")
        (folder / "rate.py").write_text(RATE, encoding="utf-8")
    path = root / "llmops.yaml"
    path.write_text("\n".join(config) + "\n", encoding="utf-8")
    return path


def _tree_rss(root: int) -> int:
    """RSS of ``root`` and all its descendants (the warm executor runs in a session of its own)."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parent[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(rss.get(pid, 0) for pid in tree)


def run(cmd: list[str], env: dict[str, str], cwd: Path, out: Path) -> tuple[float, int, float]:
    """(seconds, exit code, peak RSS of the command's whole session in MiB)."""
    peak = [0]
    with out.open("w", encoding="utf-8") as fh:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                peak[0] = max(peak[0], _tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        seconds = time.perf_counter() - start
        stop.set()
        sampler.join()
    return seconds, code, peak[0] / 2**20


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares: time = fixed + per_line x lines."""
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    slope = sum((p[0] - mx) * (p[1] - my) for p in points) / sxx if sxx else 0.0
    return my - slope * mx, slope


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, fake: FakeOpenAI) -> None:
        self.args, self.tmp, self.fake = args, tmp, fake
        self.problems: list[str] = []
        self.count = 0

    def env(self, online: bool = True) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
        if online:
            env.update(OPENAI_BASE_URL=f"{self.fake.url}/v1", OPENAI_API_KEY="dummy")
        return env

    def llmops(self, step: str, cfg: Path, *extra: str, online: bool = True, expect: int = 0) -> tuple[float, float]:
        self.count += 1
        state = self.tmp / f"state{self.count}"
        cmd = [self.args.python, "-m", "llmops_ci", step, "--config", str(cfg), "--state-dir", str(state),
               "--workers", str(self.args.workers), "--platform", "local", *extra]
        out = self.tmp / f"out{self.count}.txt"
        seconds, code, rss = run(cmd, self.env(online), cfg.parent, out)
        if code != expect:
            self.problems.append(f"exit {code} (expected {expect}): {' '.join(cmd)}\n{tail(out)}")
        left = processes_mentioning(str(state))
        if left:
            self.problems.append(f"{len(left)} process(es) left by {step}: {left}")
            kill_pids([pid for pid, _ in left])
        return seconds, rss

    def pf_run(self, cfg: Path, lines: int) -> tuple[float, float]:
        pf = find_pf(self.args.python)
        assert pf is not None
        home = self.tmp / f"pfh{lines}"
        for sub in ("tmp", "xdg-data", "xdg-config"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        (home / "pf.yaml").write_text(PF_YAML, encoding="utf-8")
        env = self.env()
        env.update(PF_HOME_DIRECTORY=str(home), PF_TRACING_SKIP_LOCAL_SETUP="true", TMPDIR=str(home / "tmp"),
                   PYTHON_KEYRING_BACKEND="keyrings.alt.file.PlaintextKeyring", XDG_DATA_HOME=str(home / "xdg-data"),
                   XDG_CONFIG_HOME=str(home / "xdg-config"), PF_WORKER_COUNT=str(self.args.workers))
        conn = self.tmp / "conn.yaml"
        conn.write_text(CONN_YAML.format(base_url=f"{self.fake.url}/v1"), encoding="utf-8")
        run([pf, "connection", "create", "--file", str(conn)], env, self.tmp, self.tmp / "pfconn.txt")
        flow = self.tmp / f"pfflow{lines}"
        shutil.copytree(cfg.parent / "flows" / "f0", flow)
        before = len(self.fake.requests)
        out = self.tmp / f"pf{lines}.txt"
        seconds, code, rss = run([pf, "run", "create", "--flow", str(flow), "--data",
                                  str(cfg.parent / "data" / "f0.jsonl"), "--column-mapping",
                                  "question=${data.question}", "--name", f"bench{lines}_{os.getpid()}"],
                                 env, self.tmp, out)
        if code != 0 or len(self.fake.requests) - before != lines:
            self.problems.append(f"pf run create: exit {code}, {len(self.fake.requests) - before} calls "
                                 f"(expected {lines})\n{tail(out)}")
        left = processes_mentioning(f"PF_HOME_DIRECTORY={home}", env_entry=True)
        if left:
            kill_pids([pid for pid, _ in left])
        return seconds, rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,200,2000")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3, help="llmops-ci repetitions per size (the median is shown)")
    parser.add_argument("--pr-lines", type=int, default=50)
    parser.add_argument("--skip-pf", action="store_true")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="eb-"))
    fake = FakeOpenAI(latency=args.latency).start()
    bench = Bench(args, tmp, fake)
    c, lat = args.workers, args.latency
    print(f"server: tests/fake_openai.py on {fake.url}, {lat:g} s per call; concurrency {c}; "
          f"{os.cpu_count()} CPUs; python {args.python}")
    try:
        # 1. scale
        print(f"\n1. one LLM flow, batch-run --workers {c} vs pf run create (PF_WORKER_COUNT={c}) vs ideal N x L / C")
        print(f"{'lines':>6} {'ideal s':>8} {'llmops-ci s':>12} {'(runs)':>22} {'pf s':>7} {'pf/llmops':>9} "
              f"{'llmops MiB':>10} {'pf MiB':>7}")
        ours: list[tuple[int, float]] = []
        theirs: list[tuple[int, float]] = []
        for n in sizes:
            cfg = write_project(tmp / f"scale{n}", 1, n, False)
            runs = [bench.llmops("batch-run", cfg) for _ in range(args.runs if n < 2000 else 1)]
            median = statistics.median(s for s, _ in runs)
            ours.append((n, median))
            pf_s, pf_rss = bench.pf_run(cfg, n) if not args.skip_pf else (float("nan"), float("nan"))
            theirs.append((n, pf_s))
            print(f"{n:>6} {n * lat / c:>8.2f} {median:>12.2f} {', '.join(f'{s:.2f}' for s, _ in runs):>22} "
                  f"{pf_s:>7.2f} {pf_s / median:>8.2f}x {max(r for _, r in runs):>10.0f} {pf_rss:>7.0f}")
        for label, points in (("llmops-ci", ours), ("pf run create", theirs), ("ideal", [(n, n * lat / c)
                                                                                        for n in sizes])):
            if len(points) > 1 and all(p[1] == p[1] for p in points):
                fixed, per_line = fit(points)
                print(f"   fit {label:>14}: {fixed:5.2f} s fixed + {per_line * 1000:5.2f} ms per line")

        # 2. 5-flow pr against 1-flow pr, replayed
        print(f"\n2. pr --llm-cache replay: 5 flows against 1 flow ({args.pr_lines} lines each, one evaluation each)")
        pr_times = {}
        for flows in (1, 5):
            cfg = write_project(tmp / f"pr{flows}", flows, args.pr_lines, True)
            bench.llmops("pr", cfg, "--llm-cache", "record")
            before = len(fake.requests)
            times = [bench.llmops("pr", cfg, "--llm-cache", "replay", online=False)[0] for _ in range(args.runs)]
            pr_times[flows] = statistics.median(times)
            print(f"   {flows} flow(s): median {pr_times[flows]:.2f} s (runs {', '.join(f'{t:.2f}' for t in times)}), "
                  f"{len(fake.requests) - before} upstream calls")
        per_flow = (pr_times[5] - pr_times[1]) / 4
        print(f"   5-flow / 1-flow = {pr_times[5] / pr_times[1]:.2f}x (goal < 2x); each additional flow "
              f"{per_flow:.2f} s (goal < 1 s)")

        # 3. record against replay
        print("\n3. batch-run 200 lines: --llm-cache record against --llm-cache replay")
        cfg = write_project(tmp / "rr", 1, 200, False)
        record, _ = bench.llmops("batch-run", cfg, "--llm-cache", "record")
        before = len(fake.requests)
        replays = [bench.llmops("batch-run", cfg, "--llm-cache", "replay", online=False)[0] for _ in range(args.runs)]
        replay = statistics.median(replays)
        print(f"   record {record:.2f} s, replay median {replay:.2f} s (runs {', '.join(f'{t:.2f}' for t in replays)})"
              f" = {replay / record:.0%} of record (goal < 20%), {len(fake.requests) - before} upstream calls (goal 0)")
        log = tmp / f"state{bench.count}" / "logs" / "executor.log"
        timing = [x.split("llmops-ci timing: ", 1)[1] for x in log.read_text(encoding="utf-8").splitlines()
                  if "llmops-ci timing: " in x] if log.is_file() else []
        print(f"   where the last replay's {replays[-1]:.2f} s went (the executor's own timing lines): "
              + "; ".join(timing))

        # 4. the example's pr
        example = tmp / "example"
        shutil.copytree(REPO / "examples" / "web-classification", example)
        times = [bench.llmops("pr", example / "llmops.yaml", online=False)[0] for _ in range(args.runs)]
        print(f"\n4. the example's pr (replayed from its cassettes): median {statistics.median(times):.2f} s "
              f"(runs {', '.join(f'{t:.2f}' for t in times)}; goal < 15 s)")
    finally:
        fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for p in bench.problems:
        print("PROBLEM: " + p)
    return 1 if bench.problems else 0


if __name__ == "__main__":
    sys.exit(main())
