#!/usr/bin/env python3
"""The warm executor against ``pf run create`` at the same concurrency, and against the ideal N x L / C.

    python bench/executor_bench.py [--sizes 20,200,2000] [--latency 0.1] [--workers 8] [--runs 3]
                                   [--pr-lines 50] [--skip-pf] [--python PATH] [--before REF] [--sections 1,2,3,4]

Prints, in one run, side by side:

1. ``llmops-ci batch-run --workers C`` now and as it was at git ``--before`` (default main; runs interleaved), and
   ``pf run create`` with ``PF_WORKER_COUNT=C`` (a private, hermetic PF home; its connection created first, not
   timed) on one flow with one LLM node, for each size: median of --runs (pf: one run per size, it is the slow
   one), the ideal N x L / C, and the peak memory of the whole process tree (the command and all its
   descendants, sampled every 50 ms) as the sum of PSS from ``/proc/<pid>/smaps_rollup`` (pages shared by
   forked processes counted once) beside the sum of RSS. Then the least-squares fit time = fixed + per_line x N.
2. ``pr --llm-cache replay`` of a 5-flow project (each flow --pr-lines lines and one evaluation) against a
   1-flow one (cassettes recorded first with ``pr --llm-cache record``): the cost of each additional flow.
3. ``batch-run --llm-cache record`` against ``--llm-cache replay`` for 200 lines, with the upstream calls
   during the replay (goal 0).
4. The example's ``pr`` (README's main command, replayed from its committed cassettes).

The LLM server is tests/fakes/openai.py (stdlib ThreadingHTTPServer, TCP_NODELAY, headers and body in one
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

from tests.fakes.openai import FakeOpenAI  # noqa: E402

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


def _tree(root: int) -> set[int]:
    """``root`` and all its descendants (the warm executor runs in a session of its own)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parent[int(entry.name)] = int(fields[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return tree


def _tree_memory(root: int) -> tuple[int, int]:
    """(RSS sum, PSS sum) in bytes of the process tree. PSS (``/proc/<pid>/smaps_rollup``) divides each page among
    the processes sharing it, so the pages forked line processes share with their parent count once."""
    rss = pss = 0
    for pid in _tree(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return rss, pss


def run(cmd: list[str], env: dict[str, str], cwd: Path, out: Path, sample: bool = True
        ) -> tuple[float, int, float, float]:
    """(seconds, exit code, peak RSS sum, peak PSS sum of the command's whole process tree in MiB); memory 0 when
    not ``sample``d (scanning /proc 20 times a second takes CPU from what is timed)."""
    peak = [0, 0]
    with out.open("w", encoding="utf-8") as fh:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        stop = threading.Event()

        def sample_memory() -> None:
            while not stop.wait(0.05):
                rss, pss = _tree_memory(proc.pid)
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)

        sampler = threading.Thread(target=sample_memory, daemon=True)
        if sample:
            sampler.start()
        code = proc.wait()
        seconds = time.perf_counter() - start
        stop.set()
        if sample:
            sampler.join()
    return seconds, code, peak[0] / 2**20, peak[1] / 2**20


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

    def env(self, online: bool = True, code: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
        if online:
            env.update(OPENAI_BASE_URL=f"{self.fake.url}/v1", OPENAI_API_KEY="dummy")
        if code is not None:  # another version of the package (--before) ahead of the installed one
            env["PYTHONPATH"] = os.pathsep.join([str(code), *filter(None, [env.get("PYTHONPATH")])])
        return env

    def llmops(self, step: str, cfg: Path, *extra: str, online: bool = True, expect: int = 0,
               code: Path | None = None) -> tuple[float, float, float]:
        """(seconds, peak RSS sum MiB, peak PSS sum MiB)."""
        self.count += 1
        state = self.tmp / f"state{self.count}"
        cmd = [self.args.python, "-m", "llmops_ci", step, "--config", str(cfg), "--state-dir", str(state),
               "--workers", str(self.args.workers), "--platform", "local", *extra]
        out = self.tmp / f"out{self.count}.txt"
        seconds, exit_code, rss, pss = run(cmd, self.env(online, code), cfg.parent, out)
        code_ = exit_code
        if code_ != expect:
            self.problems.append(f"exit {code_} (expected {expect}): {' '.join(cmd)}\n{tail(out)}")
        left = processes_mentioning(str(state))
        if left:
            self.problems.append(f"{len(left)} process(es) left by {step}: {left}")
            kill_pids([pid for pid, _ in left])
        return seconds, rss, pss

    def pf_run(self, cfg: Path, lines: int) -> tuple[float, float, float]:
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
        seconds, code, rss, pss = run([pf, "run", "create", "--flow", str(flow), "--data",
                                  str(cfg.parent / "data" / "f0.jsonl"), "--column-mapping",
                                  "question=${data.question}", "--name", f"bench{lines}_{os.getpid()}"],
                                 env, self.tmp, out)
        if code != 0 or len(self.fake.requests) - before != lines:
            self.problems.append(f"pf run create: exit {code}, {len(self.fake.requests) - before} calls "
                                 f"(expected {lines})\n{tail(out)}")
        left = processes_mentioning(f"PF_HOME_DIRECTORY={home}", env_entry=True)
        if left:
            kill_pids([pid for pid, _ in left])
        return seconds, rss, pss


def checkout(ref: str, dest: Path) -> Path | None:
    """The package as it is at git ``ref`` (``--before``), unpacked under ``dest``; None when it cannot be."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "llmops_ci"], capture_output=True, check=False)
    if archive.returncode != 0:
        print(f"--before {ref}: {archive.stderr.decode(errors='replace').strip()}")
        return None
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def scale(args: argparse.Namespace, tmp: Path, bench: Bench, old_code: Path | None) -> None:
    """Section 1: one LLM flow at each size, llmops-ci before (``--before``) and now, against pf and the ideal."""
    c, lat = args.workers, args.latency
    print(f"\n1. one LLM flow, batch-run --workers {c} (before = {args.before or '-'}, now = this checkout) vs "
          f"pf run create (PF_WORKER_COUNT={c}) vs ideal N x L / C; medians; memory: peak sum over the process "
          "tree, PSS (shared pages counted once) / RSS, MiB")
    print(f"{'lines':>6} {'ideal s':>8} {'before s':>9} {'now s':>7} {'now/before':>10} {'pf s':>7} {'pf/now':>7} "
          f"{'before PSS/RSS':>15} {'now PSS/RSS':>13} {'pf PSS/RSS':>12}")
    points: dict[str, list[tuple[int, float]]] = {"before": [], "now": [], "pf run create": []}
    for n in sizes_of(args):
        cfg = write_project(tmp / f"scale{n}", 1, n, False)
        repeat = args.runs if n < 2000 else 1
        now, old = [], []
        for _ in range(repeat):  # interleaved, so that the machine's noise falls on both alike
            if old_code is not None:
                old.append(bench.llmops("batch-run", cfg, code=old_code))
            now.append(bench.llmops("batch-run", cfg))
        pf = bench.pf_run(cfg, n) if not args.skip_pf else (float("nan"),) * 3
        now_s = statistics.median(r[0] for r in now)
        old_s = statistics.median(r[0] for r in old) if old else float("nan")
        points["now"].append((n, now_s))
        points["before"].append((n, old_s))
        points["pf run create"].append((n, pf[0]))

        def mem(runs: list[tuple[float, float, float]]) -> str:
            return f"{max(r[2] for r in runs):.0f}/{max(r[1] for r in runs):.0f}" if runs else "-"

        print(f"{n:>6} {n * lat / c:>8.2f} {old_s:>9.2f} {now_s:>7.2f} {now_s / old_s:>9.2f}x {pf[0]:>7.2f} "
              f"{pf[0] / now_s:>6.2f}x {mem(old):>15} {mem(now):>13} {f'{pf[2]:.0f}/{pf[1]:.0f}':>12}")
        print(f"{'':>6} runs: before {', '.join(f'{r[0]:.2f}' for r in old) or '-'}; now "
              f"{', '.join(f'{r[0]:.2f}' for r in now)}")
    points["ideal"] = [(n, n * lat / c) for n in sizes_of(args)]
    for label, found in points.items():
        if len(found) > 1 and all(p[1] == p[1] for p in found):
            fixed, per_line = fit(found)
            print(f"   fit {label:>14}: {fixed:5.2f} s fixed + {per_line * 1000:5.2f} ms per line")


def sizes_of(args: argparse.Namespace) -> list[int]:
    return [int(s) for s in args.sizes.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,200,2000")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3, help="llmops-ci repetitions per size (the median is shown)")
    parser.add_argument("--pr-lines", type=int, default=50)
    parser.add_argument("--skip-pf", action="store_true")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--before", default="main", metavar="REF",
                        help="also run section 1 with llmops-ci as it is at this git ref ('' to skip)")
    parser.add_argument("--sections", default="1,2,3,4", help="which sections to run (comma-separated)")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="eb-"))
    fake = FakeOpenAI(latency=args.latency).start()
    bench = Bench(args, tmp, fake)
    print(f"server: tests/fakes/openai.py on {fake.url}, {args.latency:g} s per call; concurrency {args.workers}; "
          f"{os.cpu_count()} CPUs; python {args.python}")
    try:
        if "1" in sections:
            scale(args, tmp, bench, checkout(args.before, tmp / "before") if args.before else None)
        if "2" in sections:
            print(f"\n2. pr --llm-cache replay: 5 flows against 1 flow ({args.pr_lines} lines each, one evaluation "
                  "each)")
            pr_times = {}
            for flows in (1, 5):
                cfg = write_project(tmp / f"pr{flows}", flows, args.pr_lines, True)
                bench.llmops("pr", cfg, "--llm-cache", "record")
                calls = len(fake.requests)
                times = [bench.llmops("pr", cfg, "--llm-cache", "replay", online=False)[0] for _ in range(args.runs)]
                pr_times[flows] = statistics.median(times)
                print(f"   {flows} flow(s): median {pr_times[flows]:.2f} s (runs "
                      f"{', '.join(f'{t:.2f}' for t in times)}), {len(fake.requests) - calls} upstream calls")
            per_flow = (pr_times[5] - pr_times[1]) / 4
            print(f"   5-flow / 1-flow = {pr_times[5] / pr_times[1]:.2f}x (goal < 2x); each additional flow "
                  f"{per_flow:.2f} s (goal < 1 s)")
        if "3" in sections:
            print("\n3. batch-run 200 lines: --llm-cache record against --llm-cache replay")
            cfg = write_project(tmp / "rr", 1, 200, False)
            record = bench.llmops("batch-run", cfg, "--llm-cache", "record")[0]
            calls = len(fake.requests)
            replays = [bench.llmops("batch-run", cfg, "--llm-cache", "replay", online=False)[0]
                       for _ in range(args.runs)]
            replay = statistics.median(replays)
            print(f"   record {record:.2f} s, replay median {replay:.2f} s (runs "
                  f"{', '.join(f'{t:.2f}' for t in replays)}) = {replay / record:.0%} of record (goal < 20%), "
                  f"{len(fake.requests) - calls} upstream calls (goal 0)")
            log = tmp / f"state{bench.count}" / "logs" / "executor.log"
            timing = [x.split("llmops-ci timing: ", 1)[1] for x in log.read_text(encoding="utf-8").splitlines()
                      if "llmops-ci timing: " in x] if log.is_file() else []
            print(f"   where the last replay's {replays[-1]:.2f} s went (the executor's own timing lines): "
                  + "; ".join(timing))
        if "4" in sections:
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
