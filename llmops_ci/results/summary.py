"""``summary.json`` read as typed values: parsed once (``Summary.parse``), then read by attribute, never by dict chains.

Steps write summary.json as JSON objects under the state dir's lock (state.py), so what is written stays exactly what
SPEC describes; this is its read side. Parsing never fails: ``check_summary`` turns a misshapen file into exit 2 before
this runs, and a value of the wrong type (a tampered or foreign file) reads as absent. Values the report only shows
(``Shown``) are kept as written, so the report shows what the file holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

from llmops_ci.core import redaction
from llmops_ci.core.schema import as_dict, as_list

RunStatus = Literal["completed", "failed", "incomplete"]
DeployStatus = Literal["deployed", "rolled_back"]
Shown = object  # a value as summary.json holds it (text, number, null): shown, or written back, as it is

# the sections of a flow's entry that hold results (a flow with none of them has not run)
RESULT_SECTIONS = ("run", "evaluations", "gate", "register", "deploy", "unchanged")

_L = TypeVar("_L", bound=str)


def _literal(value: object, allowed: tuple[_L, ...]) -> _L | None:
    for word in allowed:
        if value == word:
            return word
    return None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class LineError:
    """One of a run's first failed lines (1-based ``line``)."""

    line: Shown
    node: Shown
    message: Shown


@dataclass(frozen=True)
class CacheCounts:
    hits: int = 0
    misses: int = 0
    tokens_saved: int = 0
    recorded_in_change: int | None = None  # replayed answers this change recorded itself; None: not checked

    @classmethod
    def parse(cls, data: dict[str, Any]) -> CacheCounts:
        return cls(_count(data.get("hits")) or 0, _count(data.get("misses")) or 0,
                   _count(data.get("tokens_saved")) or 0, _count(data.get("recorded_in_change")))


@dataclass(frozen=True)
class ScoredLine:
    line_number: Shown
    input: Shown
    evaluated: Shown
    score: Shown


@dataclass(frozen=True)
class ScoredWrong:
    """An evaluation's lines scored wrong by a 0/1 per-line score (gate/scored.py)."""

    wrong: Shown
    scored: Shown
    first: tuple[ScoredLine, ...]


@dataclass(frozen=True)
class Disagreement:
    line: Shown
    new: Shown
    old: Shown


@dataclass(frozen=True)
class Parity:
    """The parity evaluation's comparison with the flow it replaces (parity.py)."""

    of: Shown
    method: Shown
    disagreeing: tuple[Disagreement, ...]


@dataclass(frozen=True)
class RunResult:
    """A batch run (``run``) or an evaluation run (an entry of ``evaluations``)."""

    status: RunStatus | None = None
    name: Shown = None  # the run's name (a batch run's)
    run: Shown = None  # the run's name (an evaluation's)
    variant: Shown = None
    lines_total: int | None = None
    lines_failed: int | None = None
    repeats: int | None = None
    # figures a gate rule may name (run.<figure>): numbers as written, which the gate checks are numbers
    duration_s: Shown = None
    latency_p50: Shown = None
    latency_p95: Shown = None
    tokens: dict[str, Shown] = field(default_factory=dict)  # prompt, completion, total
    error: Shown = None
    errors: tuple[LineError, ...] = ()
    llm_cache: CacheCounts | None = None
    metrics: dict[str, Shown] = field(default_factory=dict)
    flow_hash: Shown = None
    data_hash: Shown = None
    commit: Shown = None
    finished: Shown = None
    scored_wrong: ScoredWrong | None = None
    parity: Parity | None = None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> RunResult:
        cache = as_dict(data.get("llm_cache"))
        wrong = as_dict(data.get("scored_wrong"))
        return cls(
            status=_literal(data.get("status"), get_args(RunStatus)), name=data.get("name"), run=data.get("run"),
            variant=data.get("variant"), lines_total=_count(data.get("lines_total")),
            lines_failed=_count(data.get("lines_failed")), repeats=_count(data.get("repeats")),
            duration_s=data.get("duration_s"), latency_p50=data.get("latency_p50"),
            latency_p95=data.get("latency_p95"), tokens={str(k): v for k, v in as_dict(data.get("tokens")).items()},
            error=data.get("error"),
            errors=tuple(LineError(e.get("line"), e.get("node"), e.get("message"))
                         for e in as_list(data.get("errors")) if isinstance(e, dict)),
            llm_cache=CacheCounts.parse(cache) if cache else None,
            metrics={str(k): v for k, v in as_dict(data.get("metrics")).items()},
            flow_hash=data.get("flow_hash"), data_hash=data.get("data_hash"), commit=data.get("commit"),
            finished=data.get("finished"),
            scored_wrong=ScoredWrong(wrong.get("wrong"), wrong.get("scored"), tuple(
                ScoredLine(w.get("line_number"), w.get("input"), w.get("evaluated"), w.get("score"))
                for w in as_list(wrong.get("first")) if isinstance(w, dict))) if wrong else None,
            parity=Parity(data.get("of"), data.get("method"), tuple(
                Disagreement(d.get("line"), d.get("new"), d.get("old"))
                for d in as_list(data.get("disagreeing")) if isinstance(d, dict))) if "of" in data else None)


@dataclass(frozen=True)
class GateCheck:
    """One row of a flow's gate (gate/verdict.py's ``Check`` as written)."""

    metric: Shown
    rule: Shown
    passed: bool
    value: Shown = None
    baseline: Shown = None
    limit: Shown = None
    delta: Shown = None
    interval: tuple[Shown, ...] | None = None
    line_delta: Shown = None
    verdict: Shown = None
    significant: Shown = None
    test: Shown = None
    p_value: Shown = None
    mde: Shown = None
    method: Shown = None
    clusters: Shown = None
    repeats: Shown = None
    spread: Shown = None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> GateCheck:
        interval = data.get("interval")
        return cls(data.get("metric"), data.get("rule"), bool(data.get("passed")), data.get("value"),
                   data.get("baseline"), data.get("limit"), data.get("delta"),
                   tuple(interval) if isinstance(interval, list) else None, data.get("line_delta"),
                   data.get("verdict"), data.get("significant"), data.get("test"), data.get("p_value"),
                   data.get("mde"), data.get("method"), data.get("clusters"), data.get("repeats"), data.get("spread"))


@dataclass(frozen=True)
class BaselineSource:
    """Where a gate's baseline came from (gate/provenance.py)."""

    source: Shown
    commit: Shown
    age_s: Shown
    warnings: tuple[Shown, ...]


@dataclass(frozen=True)
class ChangedRule:
    metric: Shown
    rule: Shown
    was: Shown
    now: Shown


@dataclass(frozen=True)
class ChangedLine:
    line_number: Shown
    input: Shown
    was: Shown
    now: Shown


@dataclass(frozen=True)
class ChangedLines:
    """A gated metric's lines scored otherwise than the baseline (gate/scored.py)."""

    changed: Shown
    paired: Shown
    first: tuple[ChangedLine, ...]


@dataclass(frozen=True)
class GateProvenance:
    """What the gate judged, kept for when its state dir is a later run's baseline (gate/provenance.py)."""

    commit: Shown = None
    gated_at: Shown = None
    data_hash: Shown = None
    evaluation_hashes: dict[str, Shown] = field(default_factory=dict)


@dataclass(frozen=True)
class GateResult:
    passed: Shown  # True or False as the gate wrote it: anything else is no verdict
    checks: tuple[GateCheck, ...] = ()
    baseline: BaselineSource | None = None
    changed_rules: tuple[ChangedRule, ...] = ()
    changed_lines: dict[str, ChangedLines] = field(default_factory=dict)
    provenance: GateProvenance = field(default_factory=GateProvenance)
    flow_hash: Shown = None  # the content of the run it judged
    data_hash: Shown = None  # the data of the run it judged
    run: Shown = None  # the batch run it judged

    @classmethod
    def parse(cls, data: dict[str, Any]) -> GateResult:
        base = as_dict(data.get("baseline"))
        provenance = as_dict(data.get("provenance"))
        return cls(
            passed=data.get("passed"),
            checks=tuple(GateCheck.parse(c) for c in as_list(data.get("checks")) if isinstance(c, dict)),
            baseline=BaselineSource(base.get("source"), base.get("commit"), base.get("age_s"),
                                    tuple(as_list(base.get("warnings")))) if base else None,
            changed_rules=tuple(ChangedRule(r.get("metric"), r.get("rule"), r.get("was"), r.get("now"))
                                for r in map(as_dict, as_list(data.get("changed_rules")))),
            changed_lines={str(metric): ChangedLines(c.get("changed"), c.get("paired"), tuple(
                ChangedLine(x.get("line_number"), x.get("input"), x.get("was"), x.get("now"))
                for x in as_list(c.get("first")) if isinstance(x, dict)))
                for metric, c in ((m, as_dict(v)) for m, v in as_dict(data.get("changed_lines")).items())},
            provenance=GateProvenance(provenance.get("commit"), provenance.get("gated_at"), provenance.get("data_hash"),
                                      {str(k): v for k, v in as_dict(provenance.get("evaluation_hashes")).items()}),
            flow_hash=data.get("flow_hash"), data_hash=data.get("data_hash"), run=data.get("run"))


@dataclass(frozen=True)
class Registered:
    name: Shown
    version: Shown
    refused: Shown = None  # why register refused the flow's content


@dataclass(frozen=True)
class Deployed:
    status: DeployStatus | None
    model: Shown = None
    endpoint: Shown = None
    deployment: Shown = None
    traffic: dict[str, Shown] = field(default_factory=dict)
    smoke: tuple[bool, ...] = ()  # each smoke test: passed


@dataclass(frozen=True)
class Unchanged:
    """A flow ``--changed-since`` did not run."""

    since: Shown
    carried_over: bool  # the baseline's results were carried over


@dataclass(frozen=True)
class FlowResult:
    config: Shown = None  # the config whose flow this is (results.provenance.config_id)
    run: RunResult | None = None
    evaluations: dict[str, RunResult] = field(default_factory=dict)
    gate: GateResult | None = None
    register: Registered | None = None
    deploy: Deployed | None = None
    unchanged: Unchanged | None = None
    ran: bool = False  # it holds any result section (even an empty one)
    stale: str | None = None  # set for the report: why its results are for an earlier version of it

    @classmethod
    def parse(cls, data: dict[str, Any]) -> FlowResult:
        run, gate = as_dict(data.get("run")), as_dict(data.get("gate"))
        registered, deploy, unchanged = (as_dict(data.get(k)) for k in ("register", "deploy", "unchanged"))
        return cls(
            config=data.get("config"), run=RunResult.parse(run) if run else None,
            evaluations={str(k): RunResult.parse(as_dict(v)) for k, v in as_dict(data.get("evaluations")).items()},
            gate=GateResult.parse(gate) if gate else None,
            register=Registered(registered.get("name"), registered.get("version"),
                                registered.get("refused")) if registered else None,
            deploy=Deployed(_literal(deploy.get("status"), get_args(DeployStatus)), deploy.get("model"),
                            deploy.get("endpoint"), deploy.get("deployment"),
                            {str(k): v for k, v in as_dict(deploy.get("traffic")).items()},
                            tuple(bool(as_dict(s).get("passed")) for s in as_list(deploy.get("smoke"))))
            if deploy else None,
            unchanged=Unchanged(unchanged.get("since"), bool(unchanged.get("carried_over"))) if unchanged else None,
            ran=any(section in data for section in RESULT_SECTIONS), stale=_text(data.get("stale")))


@dataclass(frozen=True)
class Finding:
    """A lint finding as lint wrote it (diagnostics.findings.Finding.to_json)."""

    severity: str | None
    path: Shown
    line: Shown
    column: Shown
    rule: Shown
    message: Shown


@dataclass(frozen=True)
class StepEnd:
    """How a step ended when it did not pass."""

    exit_code: Shown
    error: Shown


@dataclass(frozen=True)
class Interrupted:
    step: Shown
    signal: Shown


@dataclass(frozen=True)
class Summary:
    flows: dict[str, FlowResult] = field(default_factory=dict)
    linted: bool = False  # lint ran (its findings may be none)
    findings: tuple[Finding, ...] = ()
    listed: bool = False  # lint's result lists its findings (an empty list: none found)
    steps: dict[str, StepEnd] = field(default_factory=dict)
    internal_errors: tuple[str, ...] = ()  # the steps that crashed
    interrupted: Interrupted | None = None
    elsewhere: dict[str, str] = field(default_factory=dict)  # set for the report: other configs' flows

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Summary:
        lint = as_dict(data.get("lint"))
        interrupted = as_dict(data.get("interrupted"))
        return cls(
            flows={str(k): FlowResult.parse(as_dict(v)) for k, v in as_dict(data.get("flows")).items()},
            linted="lint" in data,
            findings=tuple(Finding(_text(f.get("severity")), f.get("path"), f.get("line"), f.get("column"),
                                   f.get("rule"), f.get("message"))
                           for f in as_list(lint.get("findings")) if isinstance(f, dict)),
            listed="findings" in lint,
            steps={str(k): StepEnd(as_dict(v).get("exit_code"), as_dict(v).get("error"))
                   for k, v in as_dict(data.get("steps")).items()},
            internal_errors=tuple(str(k) for k in as_dict(data.get("internal_error"))),
            interrupted=Interrupted(interrupted.get("step"), interrupted.get("signal")) if interrupted else None,
            elsewhere={str(k): str(v) for k, v in as_dict(data.get("elsewhere")).items()})

    def redacted(self) -> Summary:
        """Every known secret taken out of every text it holds, names included."""
        redacted: Summary = _redacted(self)
        return redacted


def _redacted(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return dataclasses.replace(value, **{f.name: _redacted(getattr(value, f.name)) for f in fields})
    if isinstance(value, tuple):
        return tuple(_redacted(v) for v in value)
    if isinstance(value, dict):
        return {redaction.redact_data(k): _redacted(v) for k, v in value.items()}
    return redaction.redact_data(value)
