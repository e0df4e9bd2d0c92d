"""Line keys, repeats and provenance: how a baseline's lines find this run's, and what a verdict rests on."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from llmops_ci.config import FlowSpec, GateRule, load_config
from llmops_ci.core.errors import UsageError
from llmops_ci.gate.keys import (
    FILE,
    INPUTS,
    LineKeys,
    column,
    inputs_key,
    load_line_keys,
    pair,
    read_rows,
    save_line_keys,
)
from llmops_ci.gate.provenance import (
    STALE_S,
    baseline_provenance,
    changed_rules,
    content_hash,
    run_provenance,
)
from llmops_ci.gate.repeats import data_path, fold, job, mean_by_line, write_data
from llmops_ci.llm.cassette import CacheSettings
from llmops_ci.results.records import LineResult, RunRecord
from llmops_ci.results.summary import Summary
from tests.helpers.config import Raw, Rule, judged


def flow_of(tmp_path: Path, data: str = '{"q": "a", "doc": "d1"}\n{"q": "b", "doc": "d1"}\n',
            gate: Mapping[str, Rule | Raw] | None = None, **flow: Any) -> FlowSpec:
    (tmp_path / "data.jsonl").write_text(data, encoding="utf-8")
    for folder in ("flows/qa", "flows/judge"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    (tmp_path / "flows/judge/judge.py").write_text("X = 1\n")
    judged(gate or {"judge.accuracy": Rule(min=0.5, max_drop=0.05)}, **flow).write(tmp_path / "llmops.yaml")
    return load_config(tmp_path / "llmops.yaml", {}).flows["qa"]


# --- reading data ---------------------------------------------------------------------------------------------

def test_column_names_the_data_column_of_a_reference() -> None:
    assert column("${data.doc}") == "doc"
    assert column("${data.a.b}") == "a.b"
    assert column("${inputs.doc}") is None and column("${data.doc") is None and column(None) is None


def test_inputs_key_ignores_key_order_and_is_short() -> None:
    assert inputs_key({"a": 1, "b": "x"}) == inputs_key({"b": "x", "a": 1})
    assert inputs_key({"a": 1}) != inputs_key({"a": 2}) and len(inputs_key({})) == 16


def test_read_rows_of_every_format_and_of_a_folder(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_text('{"q": 1}\n\n[1]\n{"q": 2}\n', encoding="utf-8")
    (tmp_path / "d" / "b.json").write_text('[{"q": 3}, "x"]', encoding="utf-8")
    (tmp_path / "d" / "c.csv").write_text("q,r\n4,x\n", encoding="utf-8")
    (tmp_path / "d" / "d.tsv").write_text("q\tr\n5\ty\n", encoding="utf-8")
    (tmp_path / "d" / "notes.txt").write_text("ignored", encoding="utf-8")
    (tmp_path / "d" / "e.json").write_text('{"q": 6}', encoding="utf-8")  # not a list: no rows
    assert read_rows(tmp_path / "d") == [{"q": 1}, {}, {"q": 2}, {"q": 3}, {}, {"q": "4", "r": "x"},
                                         {"q": "5", "r": "y"}]
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"q": 7}\n')
    assert read_rows(bom) == [{"q": 7}]


def test_read_rows_says_which_file_is_broken(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"bad.jsonl: not valid JSON .*lint names the line"):
        read_rows(bad)
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match=r"bin.jsonl: cannot read the data"):
        read_rows(binary)


# --- saving and loading keys ----------------------------------------------------------------------------------

def test_saved_keys_default_to_the_mapped_inputs_and_repeat_keys_are_numbered(tmp_path: Path) -> None:
    flow = flow_of(tmp_path)
    save_line_keys(tmp_path, flow, [(0, {"q": "a"}), (1, {"q": "a"}), (3, {"q": "c"})])
    data = json.loads((tmp_path / FILE).read_text())
    first = inputs_key({"q": "a"})
    assert data["line_key"] == INPUTS and data["cluster"] is None
    assert data["lines"] == [
        {"line": 0, "key": first, "inputs": first, "cluster": None},
        {"line": 1, "key": first + "#2", "inputs": first + "#2", "cluster": None},
        {"line": 2, "key": None, "inputs": None, "cluster": None},
        {"line": 3, "key": inputs_key({"q": "c"}), "inputs": inputs_key({"q": "c"}), "cluster": None}]
    keys = load_line_keys(tmp_path)
    assert keys == LineKeys(INPUTS, {0: first, 1: first + "#2", 3: inputs_key({"q": "c"})},
                            {0: first, 1: first + "#2", 3: inputs_key({"q": "c"})}, None, {})


def test_saved_keys_from_a_line_key_and_cluster_column(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, line_key="${data.id}", cluster="${data.doc}",
                   data='{"id": "x", "doc": "d1"}\n{"id": 7, "doc": {"n": 2}}\n{"id": "x"}\n{"doc": "d2"}\n')
    save_line_keys(tmp_path, flow, [(0, {"q": 1}), (1, {"q": 2})])
    data = json.loads((tmp_path / FILE).read_text())
    assert data["line_key"] == "${data.id}" and data["cluster"] == "${data.doc}"
    assert [(x["line"], x["key"], x["cluster"]) for x in data["lines"]] == [
        (0, "x", "d1"), (1, "7", '{"n": 2}'), (2, "x#2", None), (3, None, "d2")]
    assert data["lines"][2]["inputs"] is None
    keys = load_line_keys(tmp_path)
    assert keys is not None and keys.kind == "${data.id}" and keys.cluster_of == "${data.doc}"
    assert keys.keys == {0: "x", 1: "7", 2: "x#2"} and keys.clusters == {0: "d1", 1: '{"n": 2}', 3: "d2"}


def test_no_lines_and_no_data_save_an_empty_list(tmp_path: Path) -> None:
    flow = flow_of(tmp_path)
    save_line_keys(tmp_path, flow, [])
    assert json.loads((tmp_path / FILE).read_text())["lines"] == []


def test_an_older_run_without_keys_pairs_by_its_lines_inputs(tmp_path: Path) -> None:
    (tmp_path / "lines.jsonl").write_text(
        json.dumps({"line": 1, "inputs": {"q": "b"}}) + "\n\n" + json.dumps({"line": 0, "inputs": {"q": "a"}})
        + "\n" + json.dumps({"line": 2, "inputs": {"q": "a"}}) + "\n" + json.dumps({"line": 3}) + "\n"
        + json.dumps(["x"]) + "\n", encoding="utf-8")
    (tmp_path / FILE).write_text('{"line_key": "x"}', encoding="utf-8")  # damaged: falls back to the lines
    keys = load_line_keys(tmp_path)
    a, b = inputs_key({"q": "a"}), inputs_key({"q": "b"})
    assert keys == LineKeys(INPUTS, {0: a, 1: b, 2: a + "#2"}, {0: a, 1: b, 2: a + "#2"}, None, {})


def test_nothing_to_load(tmp_path: Path) -> None:
    assert load_line_keys(None) is None
    assert load_line_keys(tmp_path) is None
    (tmp_path / "lines.jsonl").write_text(json.dumps({"line": 0, "status": "Failed"}) + "\n")
    assert load_line_keys(tmp_path) is None
    (tmp_path / "lines.jsonl").write_text("{broken\n")
    assert load_line_keys(tmp_path) is None


def test_saved_entries_that_are_no_line_are_skipped(tmp_path: Path) -> None:
    (tmp_path / FILE).write_text(json.dumps({"line_key": INPUTS, "cluster": 5, "lines": [
        {"line": 0, "key": "k0", "inputs": "i0", "cluster": 0}, {"line": "1", "key": "k1"}, "junk",
        {"line": 2, "key": "", "inputs": None}]}))
    keys = load_line_keys(tmp_path)
    assert keys == LineKeys(INPUTS, {0: "k0"}, {0: "i0"}, None, {0: "0"})


# --- pairing --------------------------------------------------------------------------------------------------

def _keys(kind: str, keys: dict[int, str], inputs: dict[int, str] | None = None, cluster_of: str | None = None,
          clusters: dict[int, str] | None = None) -> LineKeys:
    return LineKeys(kind, keys, inputs if inputs is not None else {}, cluster_of, clusters or {})


def test_pairing_prefers_the_shared_line_key(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, line_key="${data.id}")
    mine = _keys("${data.id}", {0: "a", 1: "b"}, {0: "ia", 1: "ib"})
    theirs = _keys("${data.id}", {0: "b", 1: "a"}, {0: "ib", 1: "ia"})
    assert pair(flow, mine, theirs) == pair(flow, mine, theirs, same_data=True)
    result = pair(flow, mine, theirs)
    assert (result.kind, result.current, result.baseline, result.note, result.clusters) == (
        "${data.id}", {0: "a", 1: "b"}, {0: "b", 1: "a"}, None, None)


def test_pairing_falls_back_to_inputs_and_says_so(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, line_key="${data.id}")
    mine = _keys("${data.id}", {0: "a"}, {0: "ia"})
    theirs = _keys(INPUTS, {0: "ia"}, {0: "ia"})
    result = pair(flow, mine, theirs)
    assert (result.kind, result.current, result.baseline) == (INPUTS, {0: "ia"}, {0: "ia"})
    assert result.note == "the baseline has no ${data.id} keys: paired by the lines' mapped inputs"
    plain = pair(flow_of(tmp_path), _keys(INPUTS, {}, {0: "ia"}), _keys(INPUTS, {}, {0: "ia"}))
    assert plain.kind == INPUTS and plain.note is None


def test_pairing_by_position_as_the_last_resort(tmp_path: Path) -> None:
    flow = flow_of(tmp_path)
    for mine, theirs in ((None, None), (_keys(INPUTS, {0: "a"}, {0: "a"}), None),
                         (None, _keys(INPUTS, {0: "a"}, {0: "a"})), (_keys(INPUTS, {}, {}), _keys(INPUTS, {}, {}))):
        result = pair(flow, mine, theirs)
        assert (result.kind, result.current, result.baseline) == ("line", {}, {})
        assert result.note == "paired by line number: the baseline (or this run) kept no line keys"
    sibling = pair(flow, _keys("${data.id}", {0: "a"}, {0: "x"}), _keys(INPUTS, {0: "y"}, {0: "y"}), same_data=True)
    assert (sibling.kind, sibling.note) == ("line", None)


def test_pairing_with_clusters(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, cluster="${data.doc}")
    mine = _keys(INPUTS, {0: "ia", 1: "ib", 2: "ic"}, {0: "ia", 1: "ib", 2: "ic"}, "${data.doc}",
                 {0: "d1", 1: "d1", 3: "d9"})
    result = pair(flow, mine, _keys(INPUTS, {0: "ib"}, {0: "ib"}))
    assert result.clusters == {"ia": "d1", "ib": "d1"}
    by_line = pair(flow, mine, None)
    assert by_line.kind == "line" and by_line.clusters == {"0": "d1", "1": "d1", "3": "d9"}
    for missing in (None, _keys(INPUTS, {0: "ia"}, {0: "ia"}), _keys(INPUTS, {0: "ia"}, {0: "ia"}, "${data.x}")):
        with pytest.raises(UsageError, match=r"cluster: \$\{data.doc\} is set but this run's lines have no cluster "
                                             r"values; run 'llmops-ci batch-run --flow qa' again"):
            pair(flow, missing, None)


# --- repeats --------------------------------------------------------------------------------------------------

def test_mean_by_line_and_spread() -> None:
    means, spread, most = mean_by_line([(0, 1), (0, 0), (1, 0.5), (2, 2), (2, 4), (2, 6)])
    assert means == {0: 0.5, 1: 0.5, 2: 4.0} and most == 3
    assert spread == pytest.approx(((0.5 ** 0.5) + 2.0) / 2)  # sd of (1, 0) and of (2, 4, 6)
    assert mean_by_line([(0, 1.0), (1, 0.0)]) == ({0: 1.0, 1: 0.0}, None, 1)
    assert mean_by_line([]) == ({}, None, 0)


@dataclasses.dataclass(frozen=True)
class _Job:  # the two fields of a RunJob that repeats touch
    data: Path
    cache: CacheSettings | None


def test_repeated_data_and_the_run_over_it(tmp_path: Path) -> None:
    flow = dataclasses.replace(flow_of(tmp_path), repeats=3)
    state = tmp_path / "state"
    written = write_data(state, flow)
    assert written == data_path(state, "qa") == state.absolute() / "runs" / ".repeats" / "qa.jsonl"
    assert [json.loads(x)["q"] for x in written.read_text().splitlines()] == ["a"] * 3 + ["b"] * 3
    run_job: Any = _Job(tmp_path / "data.jsonl", CacheSettings("replay", tmp_path / "c.json"))
    repeated = job(state, flow, run_job, write=False)
    assert repeated.data == written and repeated.cache.repeats == 3 and run_job.cache.repeats == 1
    uncached = job(state, flow, dataclasses.replace(run_job, cache=None), write=True)
    assert uncached.cache is None and uncached.data == written
    once = dataclasses.replace(flow, repeats=1)
    assert job(state, once, run_job, write=True) is run_job
    with pytest.raises(UsageError, match=r"flow 'qa' has repeats: 3 but its batch run in .* did not repeat its "
                                         r"lines; run 'llmops-ci batch-run --flow qa' again"):
        job(tmp_path / "elsewhere", flow, run_job, write=False)


def test_fold_maps_repeated_lines_back_to_data_lines() -> None:
    lines = [LineResult(i, "Completed", {}, {"i": i}, 0.1, {}) for i in (5, 0, 3, 1, 4, 2)]
    record = RunRecord("qa", "r", "Completed", lines, 1.0)
    folded = fold(record, 3, 2)
    assert [(x.line, x.repeat, x.outputs["i"]) for x in folded.lines] == [
        (0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 0, 3), (1, 1, 4), (1, 2, 5)]
    assert (folded.repeats, folded.data_lines) == (3, 2)
    plain = RunRecord("qa", "r", "Completed", [LineResult(1, "Completed", {}, {}, 0.1, {})], 1.0)
    assert fold(plain, 1, 9) is plain and plain.lines[0].repeat is None and plain.data_lines is None


# --- provenance -----------------------------------------------------------------------------------------------

def test_content_hash_of_files_and_folders(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.py").write_text("A = 1\n")
    (folder / "sub" / "b.txt").write_text("b")
    first = content_hash(folder)
    assert first is not None and len(first) == 12
    for noise in ("__pycache__/x.pyc", ".promptflow/flow.json", "c.pyc", ".runs/r", "node_modules/m.js", ".git/x"):
        (folder / noise).parent.mkdir(parents=True, exist_ok=True)
        (folder / noise).write_text("noise")
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    os.symlink(outside, folder / "link.txt")
    assert content_hash(folder) == first
    (folder / "sub" / "b.txt").write_text("B")
    assert content_hash(folder) != first
    (folder / "sub" / "b.txt").write_text("b")
    (folder / "sub" / "b.txt").rename(folder / "sub" / "c.txt")  # a rename changes the content
    assert content_hash(folder) != first
    assert content_hash(folder / "a.py") != content_hash(folder / "sub" / "c.txt")
    assert content_hash(tmp_path / "missing") is None


def test_run_provenance(tmp_path: Path) -> None:
    flow = flow_of(tmp_path)
    prov = run_provenance(flow, "abc123", now=0.0)
    assert prov["commit"] == "abc123" and prov["gated_at"].startswith(("1970-01-01T", "1969-12-31T"))
    assert prov["data_hash"] == content_hash(tmp_path / "data.jsonl")
    assert prov["evaluation_hashes"] == {"judge": content_hash(tmp_path / "flows" / "judge")}


def _summary(flow: dict[str, Any]) -> Summary:
    return Summary.parse({"flows": {"qa": flow}})


def test_baseline_provenance_compares_data_evaluations_and_age(tmp_path: Path) -> None:
    flow = flow_of(tmp_path)
    now = 1_700_000_000.0
    base = _summary({"run": {"commit": "c0ffee", "finished": "2023-11-14T22:13:20Z", "data_hash": "d0"},
                     "evaluations": {"judge": {}, "old": {}},
                     "gate": {"provenance": {"evaluation_hashes": {"judge": "e0"}}}})
    current = _summary({"run": {"data_hash": "d1"}, "evaluations": {"judge": {}}})
    out = baseline_provenance(flow, current, base, "main/", {"evaluation_hashes": {"judge": "e1"}}, now=now)
    assert (out["source"], out["commit"], out["age_s"], out["data_hash"], out["same_data"]) == (
        "main/", "c0ffee", 0, "d0", False)
    assert out["same_evaluations"] is False and out["evaluation_hashes"] == {"judge": "e0"}
    assert out["warnings"] == [
        "the data changed since the baseline (data hash d0 then, d1 now): lines are paired by key; lines only one "
        "side has are not compared",
        "evaluation judge changed since the baseline: its judge scores differently, so a change in its metrics may "
        "come from the judge",
        "the evaluation set changed since the baseline (-old)"]
    same = baseline_provenance(flow, _summary({"run": {"data_hash": "d0"}}), base, "s",
                               {"evaluation_hashes": {"judge": "e0"}}, now=now + STALE_S + 86400)
    assert same["same_data"] is True and same["same_evaluations"] is True
    assert same["warnings"] == ["the evaluation set changed since the baseline (-old)",
                                "the baseline is 8 days old: re-run the target branch to refresh it"]
    at_limit = baseline_provenance(flow, current, _summary({"run": {"finished": "2023-11-14T22:13:20+00:00"}}), "s",
                                   {}, now=now + STALE_S)
    assert at_limit["age_s"] == STALE_S and at_limit["warnings"] == []
    assert at_limit["same_data"] is None and at_limit["same_evaluations"] is None


def test_baseline_provenance_from_an_older_gate_and_from_nothing(tmp_path: Path) -> None:
    flow = flow_of(tmp_path)
    base = _summary({"gate": {"provenance": {"commit": "abc", "gated_at": "2023-11-14T22:13:20+00:00",
                                             "data_hash": "d0"}}})
    out = baseline_provenance(flow, _summary({}), base, "s", {"data_hash": "d0"}, now=1_700_000_010.0)
    assert (out["commit"], out["age_s"], out["same_data"]) == ("abc", 10, True)
    future = baseline_provenance(flow, _summary({}), base, "s", {}, now=1_600_000_000.0)
    assert future["age_s"] == 0 and future["same_data"] is None
    nothing = baseline_provenance(flow, _summary({}), _summary({"run": {"finished": "not a time"}}), "s", {})
    assert (nothing["commit"], nothing["age_s"]) == (None, None)
    assert nothing["warnings"] == ["the baseline does not say which commit or when it ran (an older llmops-ci "
                                   "made it)"]


def test_results_flow_hashes_win_over_the_gates(tmp_path: Path) -> None:
    flow = flow_of(tmp_path)
    base = _summary({"evaluations": {"judge": {"flow_hash": "h0"}},
                     "gate": {"provenance": {"evaluation_hashes": {"judge": "e0"}}}})
    current = _summary({"evaluations": {"judge": {"flow_hash": "h0"}}})
    out = baseline_provenance(flow, current, base, "s", {"evaluation_hashes": {"judge": "e1"}}, now=0.0)
    assert out["evaluation_hashes"] == {"judge": "h0"} and out["same_evaluations"] is True
    added = dataclasses.replace(flow, evaluations={**flow.evaluations, "extra": flow.evaluations["judge"]})
    out = baseline_provenance(added, current, base, "s", {}, now=0.0)
    assert "the evaluation set changed since the baseline (+extra)" in out["warnings"]


def test_changed_rules_lists_limits_and_burdens_of_proof(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, gate={"judge.accuracy": Rule(min=0.6, max_drop=0.05, significant=True),
                                   "run.latency_p95": Rule(max=4.0)})
    rows = [{"metric": "judge.accuracy", "rule": "min", "limit": 0.5},
            {"metric": "judge.accuracy", "rule": "max_drop", "limit": 0.05},
            {"metric": "run.latency_p95", "rule": "max", "limit": 4.0},
            {"metric": "run.tokens_total", "rule": "max", "limit": 900}, "junk", {"metric": 1, "rule": "min"}]
    assert changed_rules(flow, _summary({"gate": {"checks": rows}})) == [
        {"metric": "judge.accuracy", "rule": "min", "was": 0.5, "now": 0.6},
        {"metric": "run.tokens_total", "rule": "max", "was": 900, "now": None},
        {"metric": "judge.accuracy", "rule": "test", "was": None, "now": "significant"}]
    rows[1] = {**rows[1], "significant": True}
    rows[0] = {**rows[0], "limit": 0.6}
    assert changed_rules(flow, _summary({"gate": {"checks": rows[:3]}})) == []
    rows[1] = {**rows[1], "test": "non_inferiority"}
    assert changed_rules(flow, _summary({"gate": {"checks": rows[:3]}})) == [
        {"metric": "judge.accuracy", "rule": "test", "was": "non_inferiority", "now": "significant"}]
    assert changed_rules(flow, _summary({})) == [] and changed_rules(flow, _summary({"gate": {"checks": 5}})) == []
    rise = dataclasses.replace(flow, gate={"run.latency_p95": GateRule("run.latency_p95", max_rise=1.0)})
    assert changed_rules(rise, _summary({"gate": {"checks": [
        {"metric": "run.latency_p95", "rule": "max_rise", "limit": 1.0}]}})) == []


def test_keys_of_lines_beyond_the_data_and_of_a_line_key_alone(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, line_key="${data.id}", data='{"id": {"b": 1, "a": 2}}\n{"id": "y"}\n')
    save_line_keys(tmp_path, flow, [(i, {"q": i}) for i in range(4)])  # more results than data rows
    data = json.loads((tmp_path / FILE).read_text())
    assert [x["key"] for x in data["lines"]] == ['{"a": 2, "b": 1}', "y", None, None]
    assert [x["cluster"] for x in data["lines"]] == [None] * 4


def test_a_repeated_line_keeps_its_repeats_in_order() -> None:
    lines = [LineResult(i, "Completed", {}, {"i": i}, 0.1, {}) for i in (1, 0, 2)]
    folded = fold(RunRecord("qa", "r", "Completed", lines, 1.0), 3, 1)
    assert [(x.line, x.repeat) for x in folded.lines] == [(0, 0), (0, 1), (0, 2)]


def test_a_batch_run_writes_the_repeated_data(tmp_path: Path) -> None:
    flow = dataclasses.replace(flow_of(tmp_path), repeats=2)
    run_job: Any = _Job(tmp_path / "data.jsonl", None)
    state = tmp_path / "fresh"
    repeated = job(state, flow, run_job, write=True)
    assert repeated.data == data_path(state, "qa") and len(repeated.data.read_text().splitlines()) == 4


def test_inputs_keys_are_stable_across_versions() -> None:
    """A baseline made by an older llmops-ci pairs by these hashes: they must not change (UTF-8 text, not escapes;
    values JSON cannot hold as their text; a lone surrogate from a data file does not crash)."""
    import datetime

    assert inputs_key({"q": "café"}) == "f9f6ff4cbd4fa106"
    assert inputs_key({"q": "\ud800"}) == "ee4678f874f1855a"
    assert inputs_key({"when": datetime.date(2024, 6, 7)}) == "59bb356900cfef4c"
