#!/usr/bin/env python3
"""Benchmark batch runs of a prompty 2.x file: llmops-ci's runner, a ``prompty.invoke`` loop, and the ideal.

    python bench/prompty_bench.py [--lines 40] [--workers 4] [--latency 0.25] [--repeat 3]

The LLM is tests/fakes/openai.py on 127.0.0.1, answering every request after ``--latency`` seconds.
The peer is what the prompty package offers for many lines: one ``prompty.invoke`` after another.
The ideal is ceil(lines / workers) * latency: the server's time alone, ``workers`` at a time.
Also times the whole ``batch-run`` step on the file (in this process, so without interpreter start-up): lint
preflight, the local backend's prompty engine, every call through the record/replay proxy (cache off), the state
dir written. Prints best and median wall time of each, and llmops-ci's overhead per line over the ideal.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTY = """\
---
name: summarize
model:
  id: gpt-4o-mini
  provider: openai
  connection:
    kind: key
    endpoint: ${env:OPENAI_BASE_URL}
    apiKey: ${env:OPENAI_API_KEY}
  options:
    temperature: 0.2
inputs:
  - name: text
    kind: string
---
system:
Summarize in one line.

user:
{{text}}
"""


CONFIG = """\
version: 1
flows:
  summarize:
    path: summarize.prompty
    data: data.jsonl
    column_mapping:
      text: ${data.text}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=40)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    import prompty

    from llmops_ci.cli import main as llmops_ci
    from llmops_ci.engines.prompty.runner import run_lines
    from tests.fakes.openai import FakeOpenAI

    fake = FakeOpenAI(latency=args.latency).start()
    os.environ["OPENAI_BASE_URL"] = fake.url + "/v1"
    os.environ["OPENAI_API_KEY"] = "bench-key"
    rows = [{"text": f"line {i} of the benchmark"} for i in range(args.lines)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "summarize.prompty"
            path.write_text(PROMPTY, encoding="utf-8")
            run_lines(path, rows[:2], workers=2)  # warm imports for both sides
            (Path(tmp) / "llmops.yaml").write_text(CONFIG, encoding="utf-8")
            (Path(tmp) / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            step = ["batch-run", "--config", str(Path(tmp) / "llmops.yaml"), "--workers", str(args.workers),
                    "--llm-cache", "off", "--platform", "local", "--comment", "off"]

            ours, peer, steps = [], [], []
            for _ in range(args.repeat):
                start = time.perf_counter()
                run = run_lines(path, rows, workers=args.workers)
                ours.append(time.perf_counter() - start)
                assert run.lines_failed == 0, [line.error for line in run.lines if line.error]
                start = time.perf_counter()
                for row in rows:
                    prompty.invoke(str(path), inputs=row)
                peer.append(time.perf_counter() - start)
                start = time.perf_counter()
                code = llmops_ci([*step, "--state-dir", str(Path(tmp) / f"state{len(steps)}")])
                steps.append(time.perf_counter() - start)
                assert code == 0, code
    finally:
        fake.stop()
    ideal = math.ceil(args.lines / args.workers) * args.latency
    print(f"{args.lines} lines, server latency {args.latency:.2f} s, {args.workers} workers, best/median of "
          f"{args.repeat}")
    print(f"{'':28}{'best s':>10}{'median s':>10}")
    print(f"{'llmops-ci run_lines':28}{min(ours):10.2f}{statistics.median(ours):10.2f}")
    print(f"{'llmops-ci batch-run step':28}{min(steps):10.2f}{statistics.median(steps):10.2f}")
    print(f"{'prompty.invoke loop (peer)':28}{min(peer):10.2f}{statistics.median(peer):10.2f}")
    print(f"{'ideal':28}{ideal:10.2f}{ideal:10.2f}")
    print(f"llmops-ci overhead over ideal: {(min(ours) - ideal) / args.lines * 1000:.0f} ms per line; "
          f"speed-up over the peer: {min(peer) / min(ours):.1f}x; the batch-run step (proxy, lint, state dir) "
          f"over ideal: {(min(steps) - ideal) / args.lines * 1000:.0f} ms per line")
    return 0


if __name__ == "__main__":
    sys.exit(main())
