"""The warm executor process on its own: flex flows and prompty files in-process, aggregation, timeouts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from llmops_ci.engines.promptflow.executor import Worker
from llmops_ci.engines.promptflow.home import PFHome
from tests.fakes.openai import FakeOpenAI
from tests.helpers.projects import CHAT_PROMPTY, processes_using

pytestmark = pytest.mark.executor


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def worker(tmp_path: Path) -> Any:
    home = PFHome(tmp_path / "home").prepare()
    found = Worker(home, {"PATH": "/usr/bin:/bin"}, 4, tmp_path / "logs" / "executor.log")
    yield found
    found.close()
    assert processes_using(tmp_path) == []


def run(worker: Worker, flow: Path, data: Path, kind: str, **extra: Any) -> dict[str, Any]:
    request = {"op": "run", "tag": "t", "name": "t", "kind": kind, "flow": str(flow), "working_dir": str(flow.parent),
               "data": str(data), "base": None, "column_mapping": {"text": "${data.text}"}, "line_timeout_sec": 30,
               "environment_variables": {}, "provider_connections": [], **extra}
    done: list[int] = []
    outcome = worker.call(request, done.append)
    assert done == sorted(done)
    return outcome


def test_a_flex_flow_with_aggregation(worker: Worker, tmp_path: Path) -> None:
    write(tmp_path / "flex", {
        "flow.flex.yaml": "entry: score:Scorer\n",
        "score.py": """\
            class Scorer:
                def __init__(self, bonus: float = 0.0):
                    self.bonus = bonus

                def __call__(self, text: str) -> dict:
                    if text == "boom":
                        raise ValueError("cannot score boom")
                    return {"score": float(text.isupper()) + self.bonus}

                def __aggregate__(self, line_results: list) -> dict:
                    return {"rate": sum(r["score"] for r in line_results) / len(line_results)}
            """,
    })
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["A", "b", "boom", "C"]), encoding="utf-8")
    outcome = run(worker, tmp_path / "flex" / "flow.flex.yaml", data, "flex")
    lines = outcome["lines"]
    assert [(x["line"], x["status"], x["outputs"]) for x in lines] == [
        (0, "Completed", {"score": 1.0}), (1, "Completed", {"score": 0.0}), (2, "Failed", None),
        (3, "Completed", {"score": 1.0})]
    assert "cannot score boom" in lines[2]["error"]
    assert outcome["metrics"] == {"rate": pytest.approx(2 / 3)}  # over the completed lines, as pf.run


def test_lines_run_with_the_garbage_collector_on(worker: Worker, tmp_path: Path) -> None:
    """The executor imports prompt flow with the collector off (speed); a flow's code must never see that."""
    write(tmp_path / "flex", {"flow.flex.yaml": "entry: probe:run\n",
                              "probe.py": "import gc\n\n\ndef run(text: str) -> str:\n"
                                          "    return f'{gc.isenabled()} {gc.get_threshold()[0]}'\n"})
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "a"}\n', encoding="utf-8")
    outcome = run(worker, tmp_path / "flex" / "flow.flex.yaml", data, "flex")
    assert [x["outputs"] for x in outcome["lines"]] == [{"output": "True 700"}]


def test_the_import_leaves_its_objects_out_of_the_collectors_passes() -> None:
    """Imported with the collector off, then on: every object the import made is frozen first, else the first
    pass walks them all (0.1 s of every step, before its first line)."""
    code = ("import gc\nfrom llmops_ci.engines.promptflow import jobs\njobs.load()\n"
            "print(gc.isenabled(), gc.get_freeze_count() > 100_000, len(gc.get_objects()) < 5_000)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "True", "True"], done.stderr


def test_a_flex_line_past_its_timeout_is_abandoned(worker: Worker, tmp_path: Path) -> None:
    write(tmp_path / "flex", {"flow.flex.yaml": "entry: slow:run\n",
                              "slow.py": "import time\n\n\ndef run(text: str) -> str:\n"
                                         "    if text == 'sleep':\n        time.sleep(600)\n    return text\n"})
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "a"}\n{"text": "sleep"}\n{"text": "c"}\n', encoding="utf-8")
    outcome = run(worker, tmp_path / "flex" / "flow.flex.yaml", data, "flex", line_timeout_sec=1)
    statuses = [(x["line"], x["status"]) for x in outcome["lines"]]
    assert statuses == [(0, "Completed"), (1, "Failed"), (2, "Completed")]
    assert "timeout" in outcome["lines"][1]["error"]


def test_a_prompty_file_with_a_connection_from_the_store(worker: Worker, tmp_path: Path,
                                                         fake_openai: FakeOpenAI) -> None:
    write(tmp_path / "p", {"chat.prompty": CHAT_PROMPTY})
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "hello"}\n{"text": "there"}\n', encoding="utf-8")
    conn = {"name": "openai", "type": "open_ai", "values": {"api_key": "sk-x", "base_url": fake_openai.url + "/v1"}}
    outcome = run(worker, tmp_path / "p" / "chat.prompty", data, "prompty", provider_connections=[conn])
    assert "lines" in outcome, outcome
    assert [x["outputs"] for x in outcome["lines"]] == [{"output": "ECHO: hello"}, {"output": "ECHO: there"}]
    assert {r["body"]["model"] for r in fake_openai.requests} == {"gpt-test"}


STATE_TOOL = """\
    import os
    import random
    import signal
    import sys
    import threading
    import time
    from io import StringIO

    from promptflow.core import tool

    SEEN = []  # module state, as tools keep it


    @tool
    def touch(n: int, kind: str = "dag") -> dict:
        old = sys.stdout
        sys.stdout = captured = StringIO()
        os.environ["LINE_VALUE"] = str(n)
        folder = os.path.join(os.getcwd(), f"line-{n}")
        os.makedirs(folder, exist_ok=True)
        os.chdir(folder)
        random.seed(n)
        SEEN.append(n)
        handler = None
        if threading.current_thread() is threading.main_thread():  # a DAG node runs in a thread: no signals there
            signal.signal(signal.SIGUSR1, lambda *a: None if n else None)
            handler = signal.getsignal(signal.SIGUSR1)
        print(n * 1000)
        time.sleep(0.3)
        sys.stdout = old
        same_handler = handler is not None and signal.getsignal(signal.SIGUSR1) is handler
        return {"printed": captured.getvalue().strip(), "env": os.environ["LINE_VALUE"],
                "cwd": os.path.basename(os.getcwd()), "random": random.random(), "last_seen": SEEN[-1],
                "handler": same_handler}
    """


@pytest.mark.parametrize("kind", ["dag", "flex"])
def test_each_line_keeps_what_it_changes_process_wide(worker: Worker, tmp_path: Path, kind: str) -> None:
    # upstream standard/maths-to-code's func_exe swaps sys.stdout; flows written for prompt flow also assume the
    # environment, the working directory, random seeds, module globals and signal handlers are theirs for the line
    write(tmp_path / "flow", {"state.py": STATE_TOOL, "flow.flex.yaml": "entry: state:touch\n"} if kind == "flex" else
          {"state.py": STATE_TOOL, "flow.dag.yaml": """\
        inputs:
          n: {type: int}
        outputs:
          out: {type: object, reference: "${touch.output}"}
        nodes:
        - name: touch
          type: python
          source: {type: code, path: state.py}
          inputs: {n: "${inputs.n}"}
        """})
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(1, 9)), encoding="utf-8")
    outcome = run(worker, tmp_path / "flow" / f"flow.{kind}.yaml", data, kind,
                  column_mapping={"n": "${data.n}", "kind": kind} if kind == "flex" else {"n": "${data.n}"})
    import random

    outs = [x["outputs"]["out"] if kind == "dag" else x["outputs"] for x in outcome["lines"]]
    assert [x["status"] for x in outcome["lines"]] == ["Completed"] * 8
    for n, out in enumerate(outs, 1):
        random.seed(n)
        assert out == {"printed": str(n * 1000), "env": str(n), "cwd": f"line-{n}", "random": random.random(),
                       "last_seen": n, "handler": kind == "flex"}


AGGREGATE = """\
    import time
    from typing import List

    from promptflow.core import log_metric, tool


    @tool
    def aggregate(values: List[str]):
        for name in {names}:
            log_metric(name, len(values) * {factor})
            time.sleep(0.3)  # aggregations of runs side by side overlap
        return values
    """


def test_metrics_of_runs_side_by_side_stay_their_own(worker: Worker, tmp_path: Path) -> None:
    # before: one run's log_metric landed in the other's metrics (a process-wide metric logger)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": str(n)}) + "\n" for n in range(6)), encoding="utf-8")
    flows = {"a": (["accuracy"], 1), "b": (["accuracy", "error_rate"], 10), "c": (["exact_match_rate"], 100)}
    for name, (names, factor) in flows.items():
        write(tmp_path / name, {"agg.py": AGGREGATE.format(names=names, factor=factor),
                                "line.py": "import time\nfrom promptflow.core import tool\n\n\n@tool\n"
                                           "def line(text: str) -> str:\n    time.sleep(0.05)\n    return text\n",
                                "flow.dag.yaml": """\
            inputs:
              text: {type: string}
            outputs:
              out: {type: string, reference: "${line.output}"}
            nodes:
            - name: line
              type: python
              source: {type: code, path: line.py}
              inputs: {text: "${inputs.text}"}
            - name: agg
              type: python
              source: {type: code, path: agg.py}
              inputs: {values: "${line.output}"}
              aggregation: true
            """})
    import threading

    results: dict[str, dict[str, Any]] = {}
    for _ in range(2):
        threads = [threading.Thread(target=lambda n=name: results.__setitem__(n, run(
            worker, tmp_path / n / "flow.dag.yaml", data, "dag", tag=f"t-{n}", name=f"t-{n}"))) for name in flows]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert {n: r["metrics"] for n, r in results.items()} == {
            "a": {"accuracy": 6}, "b": {"accuracy": 60, "error_rate": 60}, "c": {"exact_match_rate": 600}}


def test_a_line_whose_process_dies_fails_alone(worker: Worker, tmp_path: Path) -> None:
    write(tmp_path / "flex", {"flow.flex.yaml": "entry: die:run\n",
                              "die.py": "import os\n\n\ndef run(text: str) -> str:\n"
                                        "    if text == 'die':\n        os._exit(3)\n    return text\n"})
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "a"}\n{"text": "die"}\n{"text": "c"}\n', encoding="utf-8")
    outcome = run(worker, tmp_path / "flex" / "flow.flex.yaml", data, "flex")
    assert [(x["status"], x["outputs"]) for x in outcome["lines"]] == [
        ("Completed", {"output": "a"}), ("Failed", None), ("Completed", {"output": "c"})]
    assert "exited with code 3" in outcome["lines"][1]["error"]


def test_replay_refuses_a_call_that_does_not_go_through_the_proxy(worker: Worker, tmp_path: Path,
                                                                  fake_openai: FakeOpenAI) -> None:
    # a flow building its own client on a literal endpoint: in replay that call must fail its line, never go live
    write(tmp_path / "flex", {"flow.flex.yaml": "entry: live:run\n", "live.py": f"""\
        import httpx
        import requests


        def run(text: str) -> str:
            if text == "httpx":
                return httpx.post("{fake_openai.url}/v1/chat/completions", json={{}}).text
            return requests.post("{fake_openai.url}/v1/chat/completions", json={{}}).text
        """})
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "httpx"}\n{"text": "requests"}\n', encoding="utf-8")
    outcome = run(worker, tmp_path / "flex" / "flow.flex.yaml", data, "flex", only_origin="http://127.0.0.1:9")
    assert [x["status"] for x in outcome["lines"]] == ["Failed", "Failed"]
    assert all("does not go through the record/replay proxy" in x["error"] for x in outcome["lines"])
    assert fake_openai.requests == []
