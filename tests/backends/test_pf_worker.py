"""The warm executor process on its own: flex flows and prompty files in-process, aggregation, timeouts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from llmops_ci.backends.local import Worker
from llmops_ci.backends.pf_home import PFHome
from tests.fake_openai import FakeOpenAI
from tests.helpers.projects import processes_using

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
    write(tmp_path / "p", {"chat.prompty": """\
        ---
        name: chat
        model:
          api: chat
          configuration:
            type: openai
            connection: openai
            model: gpt-test
          parameters:
            max_tokens: 50
        inputs:
          text:
            type: string
        ---
        system:
        Be brief.
        user:
        {{text}}
        """})
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "hello"}\n{"text": "there"}\n', encoding="utf-8")
    conn = {"name": "openai", "type": "open_ai", "values": {"api_key": "sk-x", "base_url": fake_openai.url + "/v1"}}
    outcome = run(worker, tmp_path / "p" / "chat.prompty", data, "prompty", provider_connections=[conn])
    assert "lines" in outcome, outcome
    assert [x["outputs"] for x in outcome["lines"]] == [{"output": "ECHO: hello"}, {"output": "ECHO: there"}]
    assert {r["body"]["model"] for r in fake_openai.requests} == {"gpt-test"}


@pytest.mark.parametrize(("text", "fast"), [
    ('{"a": 1, "b": "x", "c": [1, 2], "d": {"e": 1.5}}\n{"a": 2, "b": "y", "c": [], "d": {}}\n', True),
    ('{"a": 1, "b": "x"}\n{"a": 2}\n', False),            # a missing key: pandas fills NaN
    ('{"a": 1, "b": null}\n', False),                     # null
    ('{"created_at": "2024-01-01", "a": 1}\n', False),    # a column pandas reads as a date
    ('\ufeff{"a": 1}\n', False),                          # a BOM
    ('{"a": 123456789012345678901234567890}\n', False),   # beyond int64
])
def test_plain_jsonl_reads_exactly_what_prompt_flow_reads(text: str, fast: bool, tmp_path: Path) -> None:
    from llmops_ci.backends.pf_worker import plain_jsonl

    path = tmp_path / "d.jsonl"
    path.write_text(text, encoding="utf-8")
    rows = plain_jsonl(path)
    assert (rows is not None) == fast  # anything pandas would read differently goes to prompt flow's loader
    if fast:
        from promptflow._utils.load_data import load_data

        assert rows == load_data(local_path=path)
