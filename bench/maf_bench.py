#!/usr/bin/env python3
"""Benchmark batch runs of a declarative Agent Framework agent: llmops-ci's ``batch-run``, the framework in a plain
loop (the peer), and the ideal.

    LLMOPS_CI_AGENTS_PATH=<dir with agent-framework-*> python bench/maf_bench.py [--lines 40] [--workers 4]
        [--latency 0.25] [--repeat 3]

The LLM is tests/fakes/openai.py on 127.0.0.1, answering every request after ``--latency`` seconds.
The peer is a fresh Python process that loads the same YAML with ``AgentFactory().create_agent_from_yaml`` and
runs ``agent.run`` over the lines, ``--workers`` at a time (asyncio), straight to the server.
llmops-ci is ``python -m llmops_ci batch-run`` (interpreter start, lint preflight, the local backend's
agent_framework engine: a child process running the framework, every call through the record/replay proxy with the
cache off, per-line records and the state dir written).
Each is timed on 1 line and on ``--lines`` lines: the fixed cost is the 1-line time minus one latency, the per-line
overhead is (T(N) - T(1) - (ideal(N) - ideal(1))) / (N - 1). The ideal is ceil(N / workers) * latency (N·L/C).
Prints medians over ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AGENT = """\
kind: Prompt
name: Summarizer
instructions: Summarize in one line.
model:
  id: gpt-4o-mini
  provider: OpenAI
  apiType: Chat
  connection:
    kind: key
    endpoint: =Env.OPENAI_BASE_URL
    key: =Env.OPENAI_API_KEY
"""
CONFIG = """\
version: 1
flows:
  summarize:
    path: agent.yaml
    data: {data}
    column_mapping:
      input: ${{data.text}}
"""
PEER = """\
import asyncio, json, os, sys, time
started = time.perf_counter()
from agent_framework_declarative import AgentFactory
text = open(sys.argv[1]).read().replace("=Env.OPENAI_BASE_URL", os.environ["OPENAI_BASE_URL"]).replace(
    "=Env.OPENAI_API_KEY", os.environ["OPENAI_API_KEY"])
agent = AgentFactory().create_agent_from_yaml(text)
rows = [json.loads(x) for x in open(sys.argv[2]) if x.strip()]
gate = asyncio.Semaphore(int(sys.argv[3]))
async def one(row):
    async with gate:
        response = await agent.run(row["text"])
        return response.text, response.usage_details
async def main():
    return await asyncio.gather(*(one(r) for r in rows))
results = asyncio.run(main())
assert len(results) == len(rows) and all(r[0] for r in results)
"""


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=40)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    from tests.fakes.openai import FakeOpenAI

    fake = FakeOpenAI(latency=args.latency).start()
    work = Path(tempfile.mkdtemp(prefix="maf-bench-"))
    agents_path = os.environ.get("LLMOPS_CI_AGENTS_PATH", "")
    env = {**os.environ, "OPENAI_BASE_URL": fake.url + "/v1", "OPENAI_API_KEY": "sk-bench",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    peer_env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (agents_path, env["PYTHONPATH"]) if p)}
    (work / "agent.yaml").write_text(AGENT, encoding="utf-8")
    (work / "peer.py").write_text(PEER, encoding="utf-8")
    sizes = {1: work / "one.jsonl", args.lines: work / "many.jsonl"}
    for n, path in sizes.items():
        path.write_text("".join(json.dumps({"text": f"page {i}: some text about item {i}"}) + "\n"
                                for i in range(n)), encoding="utf-8")
        (work / f"llmops-{n}.yaml").write_text(CONFIG.format(data=path.name), encoding="utf-8")

    times: dict[tuple[str, int], list[float]] = {}
    try:
        for _ in range(args.repeat):
            for n, data in sizes.items():
                times.setdefault(("peer", n), []).append(timed(
                    [sys.executable, str(work / "peer.py"), str(work / "agent.yaml"), str(data), str(args.workers)],
                    peer_env, work))
                times.setdefault(("llmops-ci", n), []).append(timed(
                    [sys.executable, "-m", "llmops_ci", "batch-run", "--config", f"llmops-{n}.yaml", "--state-dir",
                     str(work / f"state-{n}"), "--workers", str(args.workers)], env, work))
    finally:
        fake.stop()

    def ideal(n: int) -> float:
        return math.ceil(n / args.workers) * args.latency

    n = args.lines
    print(f"Agent Framework declarative agent, {n} lines, {args.workers} at a time, {args.latency:.2f} s per call, "
          f"median of {args.repeat}")
    print(f"{'':12} {'1 line s':>9} {f'{n} lines s':>10} {'fixed s':>8} {'per line ms':>12} {'vs ideal':>9}")
    print(f"{'ideal':12} {ideal(1):9.3f} {ideal(n):10.3f} {0:8.3f} {0:12.1f} {1:9.2f}")
    for who in ("peer", "llmops-ci"):
        one, many = statistics.median(times[(who, 1)]), statistics.median(times[(who, n)])
        fixed = one - ideal(1)
        per_line = (many - one - (ideal(n) - ideal(1))) / max(1, n - 1)
        print(f"{who:12} {one:9.3f} {many:10.3f} {fixed:8.3f} {per_line * 1000:12.1f} {many / ideal(n):9.2f}")
    peer_many = statistics.median(times[("peer", n)])
    ours_many = statistics.median(times[("llmops-ci", n)])
    print(f"llmops-ci / peer on {n} lines: {ours_many / peer_many:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
