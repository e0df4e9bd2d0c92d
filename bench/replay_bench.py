#!/usr/bin/env python3
"""Benchmark ``llmops-ci batch-run --llm-cache record`` against ``--llm-cache replay`` on the example project.

    python bench/replay_bench.py [--lines 200] [--latency 0.2] [--workers 4] [--python PATH]

What it does:

1. Copies examples/web-classification to a temporary folder, deletes its cassettes/ and writes a
   data/classify.jsonl of --lines distinct lines (the 42 example lines repeated, " (copy k)" appended
   to the text of the k-th repetition; keys url, text, label).
2. Starts ``tests.fakes.openai.FakeOpenAI`` in this process with --latency seconds per call, answering
   like ``tests/test_examples.py::classify_by_url`` (JSON with category and evidence).
3. Times ``python -m llmops_ci batch-run --flow classify --llm-cache record --workers W`` with
   OPENAI_BASE_URL/OPENAI_API_KEY pointing at the fake server: wall time, upstream calls (the server's
   request count delta) and the summary's ``llm_cache`` block.
4. Times the same with ``--llm-cache replay``, OPENAI_BASE_URL and OPENAI_API_KEY removed from the
   environment (offline, no key) and a fresh state dir: wall time, upstream calls (must be 0), hits
   (must be --lines), and compares the per-line outputs of runs/classify/lines.jsonl with the record run's.
5. Prints a closing block: both times, the replay/record ratio (goal < 20 %), the upstream calls on
   replay (goal 0), the fixed cost of a run and the ratio it implies at --workers 1.
6. Stops the server, deletes the temporary folder and makes sure no process mentioning it is left.

Standard library only (plus the repo's tests/fakes/openai.py and tests/test_examples.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from _harness import kill_pids, processes_mentioning, run_timed, tail

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fakes.openai import FakeOpenAI  # noqa: E402
from tests.test_examples import classify_by_url  # noqa: E402

EXAMPLE = REPO / "examples" / "web-classification"
FLOW = "classify"
# variables of the caller that would point a run somewhere else or change pf's defaults
DROP_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "PF_HOME_DIRECTORY",
            "PF_CONNECTION_PROVIDER", "PF_WORKER_COUNT", "PF_LINE_TIMEOUT_SEC", "PF_BATCH_TIMEOUT_SEC",
            "OPENAI_BASE_URL", "OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY")


# -- helpers ----------------------------------------------------------------------------------------------


def write_project(root: Path, lines: int) -> tuple[Path, int]:
    """Copy the example (minus cassettes and any stray run output) with ``lines`` distinct data lines."""
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", ".runs"))
    shutil.rmtree(root / "cassettes", ignore_errors=True)
    source = [json.loads(x) for x in (EXAMPLE / "data" / "classify.jsonl").read_text(encoding="utf-8").splitlines()
              if x.strip()]
    rows = []
    for i in range(lines):
        base, k = source[i % len(source)], i // len(source)
        rows.append({"url": base["url"], "text": base["text"] + (f" (copy {k})" if k else ""), "label": base["label"]})
    assert len({(r["url"], r["text"]) for r in rows}) == lines, "data lines are not distinct"
    with (root / "data" / "classify.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return root / "llmops.yaml", len(source)


def leftovers(needle: str, label: str) -> list[str]:
    """Processes still mentioning ``needle`` 2 s after ``label`` exited: reported and killed."""
    deadline = time.monotonic() + 2
    found = processes_mentioning(needle)
    while found and time.monotonic() < deadline:
        time.sleep(0.2)
        found = processes_mentioning(needle)
    if not found:
        return []
    kill_pids([pid for pid, _ in found])
    return ([f"{label}: {len(found)} process(es) still running after it exited (killed):"]
            + [f"    pid {pid}: {cmd[:160]}" for pid, cmd in found])


@dataclass
class LinePhase:
    """When pf executed the lines (its per-line run_info start/end times), as seconds from the process start."""

    first_start: float
    last_end: float
    mean_duration: float  # seconds a line spends inside pf (includes the LLM call on record)

    @property
    def span(self) -> float:
        return self.last_end - self.first_start


def line_phase(run_dir: Path, wall_start: float) -> LinePhase | None:
    starts, ends, durations = [], [], []
    for path in (run_dir / "flow_artifacts").glob("*.jsonl"):
        for raw in path.read_text(encoding="utf-8").splitlines():
            if not raw.strip():
                continue
            info = json.loads(raw).get("run_info") or {}
            with contextlib.suppress(TypeError, ValueError, KeyError):
                start = datetime.fromisoformat(str(info["start_time"]).replace("Z", "+00:00")).timestamp()
                end = datetime.fromisoformat(str(info["end_time"]).replace("Z", "+00:00")).timestamp()
                starts.append(start)
                ends.append(end)
                durations.append(end - start)
    if not starts:
        return None
    return LinePhase(min(starts) - wall_start, max(ends) - wall_start, sum(durations) / len(durations))


def read_outputs(path: Path) -> dict[int, Any]:
    """line number -> outputs, from a state dir's runs/<flow>/lines.jsonl."""
    out: dict[int, Any] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.strip():
            rec = json.loads(raw)
            out[int(rec["line"])] = rec.get("outputs")
    return out


# -- one batch-run ------------------------------------------------------------------------------------------


@dataclass
class Measure:
    mode: str
    seconds: float = 0.0
    code: int | None = None
    wall_start: float = 0.0
    phase: LinePhase | None = None
    upstream: int = 0
    run: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    outputs: dict[int, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def batch_run(args: argparse.Namespace, cfg: Path, tmp: Path, fake: FakeOpenAI, mode: str, state: Path,
              online: bool) -> Measure:
    m = Measure(mode)
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    env["TMPDIR"] = str(tmp / "tmpdir")  # so everything the run starts mentions our temp dir
    if online:
        env.update(OPENAI_BASE_URL=f"{fake.url}/v1", OPENAI_API_KEY="dummy")
    cmd = [args.python, "-m", "llmops_ci", "batch-run", "--config", str(cfg), "--flow", FLOW, "--llm-cache", mode,
           "--workers", str(args.workers), "--state-dir", str(state)]
    out = tmp / f"{mode}.out"
    before = len(fake.requests)
    m.seconds, m.wall_start, m.code = run_timed(cmd, env, cfg.parent, out)
    m.upstream = len(fake.requests) - before
    if m.code != 0:
        m.problems.append(f"exit {m.code} (expected 0): {' '.join(cmd)}\n{tail(out)}")
    try:
        m.run = json.loads((state / "summary.json").read_text(encoding="utf-8"))["flows"][FLOW]["run"]
        total, failed = m.run.get("lines_total"), m.run.get("lines_failed")
        if (total, failed) != (args.lines, 0):
            m.problems.append(f"summary.json says {total} lines, {failed} failed (expected {args.lines}, 0); "
                              f"status {m.run.get('status')}, errors {str(m.run.get('errors'))[:300]}")
        m.cache = m.run.get("llm_cache") or {}
        if m.run.get("name"):
            m.phase = line_phase(state / "pf-home" / ".runs" / str(m.run["name"]), m.wall_start)
        if not m.cache:
            m.problems.append(f"summary.json has no flows.{FLOW}.run.llm_cache block")
        elif m.cache.get("mode") != mode:
            m.problems.append(f"llm_cache.mode is {m.cache.get('mode')!r} (expected {mode!r})")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        m.problems.append(f"no usable {state / 'summary.json'}: {type(exc).__name__}: {exc}")
    try:
        m.outputs = read_outputs(state / "runs" / FLOW / "lines.jsonl")
        if len(m.outputs) != args.lines:
            m.problems.append(f"lines.jsonl has {len(m.outputs)} lines (expected {args.lines})")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        m.problems.append(f"no usable {state / 'runs' / FLOW / 'lines.jsonl'}: {type(exc).__name__}: {exc}")
    m.problems += leftovers(str(state), f"batch-run --llm-cache {mode}")
    return m


def describe(m: Measure) -> str:
    c = m.cache
    cache = (f"llm_cache mode {c.get('mode')}, {c.get('hits')} hits, {c.get('misses')} misses, "
             f"{c.get('recorded')} recorded, {c.get('tokens_saved')} tokens saved") if c else "no llm_cache block"
    return (f"batch-run --llm-cache {m.mode}: {m.seconds:.2f} s, exit {m.code}, {m.upstream} upstream calls, "
            f"{m.run.get('lines_total')} lines ({m.run.get('lines_failed')} failed); {cache}"
            + ("" if m.ok else "  ** PROBLEM **")
            + (f"\n  lines executed by pf {m.phase.first_start:.2f} s .. {m.phase.last_end:.2f} s after the process "
               f"started ({m.phase.span:.2f} s; {m.phase.mean_duration * 1000:.0f} ms per line inside pf on average); "
               f"{m.seconds - m.phase.last_end:.2f} s from the last line to exit" if m.phase else ""))


# -- main ---------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per fake LLM call")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="rb-"))  # short: pf's TMPDIR below it holds Unix sockets
    (tmp / "tmpdir").mkdir()
    fake = FakeOpenAI(latency=args.latency, answer=classify_by_url)
    fake.start()
    problems: list[str] = []
    try:
        project = tmp / "project"
        cfg, distinct = write_project(project, args.lines)
        print(f"project: {project} ({args.lines} distinct lines from the example's {distinct}, no cassettes); "
              f"fake OpenAI at {fake.url} with {args.latency:.3f} s latency; --workers {args.workers}; "
              f"python {args.python}")

        # 1. record: online, every call goes upstream and into the cassette
        rec = batch_run(args, cfg, tmp, fake, "record", tmp / "s1", online=True)
        if rec.upstream != args.lines:
            rec.problems.append(f"the fake server got {rec.upstream} requests (expected {args.lines})")
        if rec.cache and rec.cache.get("recorded") != args.lines:
            rec.problems.append(f"llm_cache.recorded is {rec.cache.get('recorded')} (expected {args.lines})")
        cassette = cfg.parent / "cassettes" / f"{FLOW}.json"
        entries = None
        try:
            entries = len(json.loads(cassette.read_text(encoding="utf-8"))["entries"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            rec.problems.append(f"no usable cassette {cassette}: {type(exc).__name__}: {exc}")
        print(describe(rec))
        if entries is not None:
            size = cassette.stat().st_size / 1024
            print(f"  cassette {cassette.relative_to(tmp)}: {entries} entries, {size:.0f} KiB")

        # 2. replay: offline (no URL, no key), fresh state dir
        rep = batch_run(args, cfg, tmp, fake, "replay", tmp / "s2", online=False)
        if rep.upstream != 0:
            rep.problems.append(f"the fake server got {rep.upstream} requests on replay (expected 0)")
        if rep.cache and (rep.cache.get("hits"), rep.cache.get("misses")) != (args.lines, 0):
            rep.problems.append(f"llm_cache: {rep.cache.get('hits')} hits, {rep.cache.get('misses')} misses "
                                f"(expected {args.lines}, 0)")
        print(describe(rep))

        differ = sorted(n for n in set(rec.outputs) | set(rep.outputs) if rec.outputs.get(n) != rep.outputs.get(n))
        identical = bool(rec.outputs) and not differ and len(rec.outputs) == args.lines
        if differ:
            rep.problems.append(f"{len(differ)} line(s) have different outputs on record and replay, e.g. line "
                                f"{differ[0]}: {rec.outputs.get(differ[0])!r} vs {rep.outputs.get(differ[0])!r}")
        categories: dict[str, int] = {}
        for value in rec.outputs.values():
            key = str((value or {}).get("category"))
            categories[key] = categories.get(key, 0) + 1
        print(f"  outputs by line: {len(rec.outputs)} on record, {len(rep.outputs)} on replay, {len(differ)} differ; "
              f"categories {dict(sorted(categories.items()))}")

        for m in (rec, rep):
            for p in m.problems:
                print(f"  PROBLEM ({m.mode}): {p}")
                problems.append(f"{m.mode}: {p}")

        # closing block
        llm_time = args.lines * args.latency / args.workers
        ratio = rep.seconds / rec.seconds if rec.seconds else float("inf")
        hits = rep.cache.get("hits") if rep.cache else None
        print()
        print(f"record: {rec.seconds:.2f} s, {rec.upstream} upstream calls ({args.lines} x {args.latency:g} s / "
              f"{args.workers} workers = {llm_time:.2f} s of LLM time)" + ("" if rec.ok else "  [problems, see above]"))
        print(f"replay: {rep.seconds:.2f} s, {rep.upstream} upstream calls, {hits}/{args.lines} hits, "
              f"outputs identical: {'yes' if identical else 'no'}" + ("" if rep.ok else "  [problems, see above]"))
        print(f"replay / record = {ratio:.0%} (goal < 20%: {'PASS' if ratio < 0.2 else 'FAIL'}); "
              f"upstream calls on replay: {rep.upstream} (goal 0: {'PASS' if rep.upstream == 0 else 'FAIL'})")
        # replay has no LLM wait, so its time is about what any run costs: interpreter and pf imports, executor
        # start/stop, artifacts. Minus its line phase (pf's own per-line times) it is the part that does not grow
        # with the data. At --workers 1 the lines run one after the other: N x (latency + pf's time per line).
        w1 = args.lines * args.latency
        if rep.phase is not None:
            fixed = rep.seconds - rep.phase.span
            per_line = rep.phase.mean_duration
            rec1, rep1 = fixed + args.lines * (args.latency + per_line), fixed + args.lines * per_line
            after = rep.seconds - rep.phase.last_end
            print(f"fixed cost of a run ~ {fixed:.2f} s (replay {rep.seconds:.2f} s minus its {rep.phase.span:.2f} s "
                  f"line phase: {rep.phase.first_start:.2f} s to the first line, {after:.2f} s after the last)")
            print(f"at --workers 1 (computed, not run; {per_line * 1000:.0f} ms of pf time per line as measured with "
                  f"{args.workers} workers on {os.cpu_count()} CPUs): record ~ {fixed:.2f} + {args.lines} x "
                  f"({args.latency:g} + {per_line:.3f}) = {rec1:.2f} s, replay ~ {fixed:.2f} + {args.lines} x "
                  f"{per_line:.3f} = {rep1:.2f} s, replay / record ~ {rep1 / rec1:.0%}")
        else:
            fixed = rep.seconds
            print(f"fixed cost of a run ~ {fixed:.2f} s (the replay time; pf's line records were not readable); at "
                  f"--workers 1 (computed, not run): record ~ {fixed:.2f} + {w1:.2f} = {fixed + w1:.2f} s, "
                  f"replay / record ~ {fixed / (fixed + w1):.0%}")
        if problems:
            print(f"\n{len(problems)} problem(s), see above.")
        return 1 if problems else 0
    finally:
        fake.stop()
        stray = processes_mentioning(str(tmp))
        if stray:
            print(f"cleanup: killing {len(stray)} leftover process(es): "
                  + ", ".join(f"{pid} ({cmd[:80]})" for pid, cmd in stray))
            kill_pids([pid for pid, _ in stray])
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"cleanup: fake server stopped, {tmp} deleted" + ("" if stray else ", no process mentioning it left")
              + ("" if not tmp.exists() else f" (NOT deleted: {tmp} still exists)"))


if __name__ == "__main__":
    sys.exit(main())
