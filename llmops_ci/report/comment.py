"""The state dir rendered as the one PR comment (and the job summary): headline, gate, runs, lint.

The body always fits the platform's limit: when it does not, detail is dropped in order of
least value (the folded lint list, then passing flows' rows, then error lists) and the body
says where the full report is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from llmops_ci.core.log import number
from llmops_ci.core.safe_text import code, log_safe, md
from llmops_ci.report.headline import headline
from llmops_ci.results.summary import Finding, FlowResult, GateCheck, RunResult, Summary

MARKER = "<!-- llmops-ci:comment -->"
DEFAULT_LIMIT = 65_536  # characters: a body every platform takes as a PR comment; each passes its own limit
SEVERITY_ORDER = {"error": 0, "warning": 1}


@dataclass(frozen=True)
class Outcome:
    passed: bool
    headline: str
    failed: list[str] = field(default_factory=list)
    nothing_ran: bool = False  # no lint, run or evaluation result at all: never green, the step exits 2


def _step_problems(summary: Summary, failed: bool) -> list[str]:
    """Steps that stopped before their results were in (bad input, a dead service, a crash, a signal); with
    ``failed``, also those whose check failed (exit 1), which the results show already unless they do not."""
    problems = []
    for step, stopped in sorted(summary.steps.items()):
        code = stopped.exit_code
        if code == 1 and not failed:
            continue
        error = " ".join(str(stopped.error or "").split())
        problems.append(f"{step} {'failed' if code == 1 else 'stopped'} (exit {code})"
                        + (f": {error[:200]}" if error else ""))
    for step in sorted(summary.internal_errors):
        problems.append(f"internal error in {step}")
    if summary.interrupted is not None:
        problems.append(f"{summary.interrupted.step} was interrupted ({summary.interrupted.signal})")
    return problems


def _flow_problems(name: str, flow: FlowResult) -> list[str]:
    problems = []
    if flow.stale:
        problems.append(f"results of {name} are for an earlier version of it")
    status = flow.run.status if flow.run else None
    if status == "failed":
        problems.append(f"run of {name} failed")
    elif status == "incomplete":
        problems.append(f"run of {name} never finished")
    for ename, evaluation in sorted(flow.evaluations.items()):
        if evaluation.status == "failed":
            problems.append(f"evaluation {name}/{ename} failed")
        elif evaluation.status == "incomplete":
            problems.append(f"evaluation {name}/{ename} never finished")
    if flow.gate is not None and flow.gate.passed is False:
        problems.append(f"gate of {name} failed")
    if flow.register is not None and flow.register.refused:
        problems.append(f"register of {name} refused")
    if flow.deploy is not None and flow.deploy.status == "rolled_back":
        problems.append(f"deploy of {name} rolled back")
    return problems


def outcome(summary: Summary) -> Outcome:
    problems = _step_problems(summary, failed=False)
    errors = sum(1 for f in summary.findings if f.severity == "error")
    if errors:
        problems.append(f"{errors} lint error{'s' if errors != 1 else ''}")
    for name, flow in sorted(summary.flows.items()):
        problems += _flow_problems(name, flow)
    problems = problems or _step_problems(summary, failed=True)  # a step that failed is never green
    if problems:
        return Outcome(False, "❌ llmops-ci: " + headline(problems), problems)
    ran = any(flow.ran for flow in summary.flows.values())
    if not ran and not summary.linted:
        return Outcome(False, "⚠️ llmops-ci: nothing ran: no lint, run or evaluation result in this state dir",
                       ["nothing ran"], nothing_ran=True)
    if not ran:
        return Outcome(True, "✅ llmops-ci: all checks passed (lint only; no flow was run)")
    flows = summary.flows.values()
    if not any(f.run or f.evaluations or f.gate or f.register or f.deploy
               or (f.unchanged is not None and f.unchanged.carried_over) for f in flows):
        since = ", ".join(sorted({str(f.unchanged.since) for f in flows if f.unchanged is not None}))
        return Outcome(True, f"✅ llmops-ci: lint passed; no flow changed since {since}, so none was run or gated")
    unchecked = sum(1 for f in flows if f.gate is not None for c in f.gate.checks
                    if c.passed and c.verdict == "no baseline")
    if unchecked:  # a rule against a baseline that is not there passes, but nothing stands behind it
        return Outcome(True, f"✅ llmops-ci: all checks passed ({unchecked} rule{'s' if unchecked != 1 else ''} "
                             "against a baseline not checked: no baseline)")
    return Outcome(True, "✅ llmops-ci: all checks passed")


def current(summary: Summary, config: str | None) -> Summary:
    """``summary`` with only the flows of ``config`` (the config a step ran with); results that other configs
    left in a shared state dir move to ``elsewhere`` (flow: config), shown apart and never as current."""
    if config is None:
        return summary
    flows, elsewhere = {}, {}
    for name, flow in summary.flows.items():
        if flow.config is None or flow.config == config:
            flows[name] = flow
        else:
            elsewhere[name] = str(flow.config)
    if not elsewhere:
        return summary
    return replace(summary, flows=flows, elsewhere=elsewhere)


def _elsewhere(summary: Summary, st: Style) -> str:
    elsewhere = summary.elsewhere
    if not elsewhere:
        return ""
    names = ", ".join(f"{st.code(name)} ({st.text(config, 200)})" for name, config in sorted(elsewhere.items()))
    return (f"{st.heading}Not shown: results of other configs in this state dir\n\n{names}; they are not results "
            "of this config. Use a --state-dir per config.")


def _plain(text: object, limit: int = 500) -> str:
    flat = " ".join(str(text).split())
    return log_safe(flat if len(flat) <= limit else flat[: limit - 1] + "…")


@dataclass(frozen=True)
class Style:
    """How the report is written: markdown for the PR comment and job summary, plain text for a terminal."""

    text: Callable[[object, int], str]  # untrusted text, one line
    code: Callable[[object], str]  # identifiers
    tablefmt: str
    heading: str  # the prefix of a section heading
    bold: Callable[[str], str]
    details: Callable[[str, str], str]  # (summary, body): folded where the format can fold


MARKDOWN = Style(md, code, "github", "### ", lambda t: f"**{t}**",
                 lambda summary, body: f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>")
PLAIN = Style(_plain, lambda t: _plain(t, 200), "simple", "", lambda t: t, lambda summary, body: f"{summary}:\n{body}")


def _num(value: object, digits: int = 4, st: Style = MARKDOWN) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, (int, float)):
        return number(value, digits)
    return st.text(value, 40)


def _table(rows: list[list[str]], headers: list[str], st: Style = MARKDOWN) -> str:
    from tabulate import tabulate  # only when a table is drawn: it is slow to import

    return tabulate(rows, headers=headers, tablefmt=st.tablefmt, disable_numparse=True)


def _interval(check: GateCheck, st: Style) -> str:
    interval = check.interval or ()
    if len(interval) != 2:
        return "-"
    shown = f"[{_num(interval[0], st=st)}, {_num(interval[1], st=st)}]"
    if check.line_delta is None:
        return shown
    # the interval is on the per-line score's scale; its own point value goes with it
    return f"{_num(check.line_delta, st=st)} {shown} per line"


def _gate(flows: dict[str, FlowResult], only_failed: bool, st: Style = MARKDOWN) -> str:
    rows = []
    for name, flow in sorted(flows.items()):
        for check in flow.gate.checks if flow.gate else ():
            if only_failed and check.passed:
                continue
            rule = f"{check.rule} {_num(check.limit, st=st)}"
            if check.significant:
                rule += ", significant: true"
            if check.test:
                rule += f", test: {st.text(check.test, 30)}"
            rows.append((check.passed, [
                st.code(name), st.text(check.metric, 80), _num(check.value, st=st),
                _num(check.baseline, st=st), _num(check.delta, st=st), _interval(check, st),
                _statistics(check, st), rule, st.text(check.verdict, 30) if check.verdict else "-",
                "✅" if check.passed else "❌"]))
    if not rows:
        return ""
    ordered = [row for _, row in sorted(rows, key=lambda r: r[0])]  # failing rows first; stable within
    return f"{st.heading}Gate\n\n" + _table(ordered, ["flow", "metric", "value", "baseline", "Δ",
                                                       "95% CI (per-line score)", "p (adj.), mde", "rule", "verdict",
                                                       "result"], st) + _provenance(flows, st)


def _statistics(check: GateCheck, st: Style) -> str:
    """The paired row's family-adjusted p, minimum detectable effect, method and clusters."""
    if check.p_value is None:
        return "-"
    out = f"p {_num(check.p_value, 2, st=st)}, mde {_num(check.mde, 2, st=st)}"
    out += f", {st.text(check.method, 30)}" if check.method else ""
    out += f", {_num(check.clusters, st=st)} clusters" if check.clusters else ""
    if check.repeats:  # each line's score is the mean of its repeats; how much they vary within a line
        out += f", {_num(check.repeats, st=st)} repeats (within-line sd {_num(check.spread, 2, st=st)})"
    return out


def _age(seconds: object) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return "age unknown"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} old"
    return "just made"


def _provenance(flows: dict[str, FlowResult], st: Style) -> str:
    """Per flow: the baseline's source and age, its warnings, and the gate rules changed since it."""
    lines = []
    for name, flow in sorted(flows.items()):
        if flow.gate is None:
            continue
        base = flow.gate.baseline
        if base is not None:
            commit = base.commit
            lines.append(f"{st.code(name)}: baseline {st.text(base.source, 120)}"
                         + (f" at {st.code(str(commit)[:12])}" if commit else "") + f", {_age(base.age_s)}")
            lines += [f"⚠️ {st.code(name)}: {st.text(w, 300)}" for w in base.warnings]
        for rule in flow.gate.changed_rules:
            lines.append(f"⚠️ {st.code(name)}: rule {st.text(rule.metric, 80)} {st.text(rule.rule, 20)} "
                         f"changed in this change: {_num(rule.was, st=st)} → {_num(rule.now, st=st)}")
    return ("\n\n" + "\n".join(f"- {line}" for line in lines)) if lines else ""


def _runs(flows: dict[str, FlowResult], errors_per_flow: int, only_failed: bool, st: Style = MARKDOWN) -> str:
    rows, details, errors = [], [], []
    for name, flow in sorted(flows.items()):
        run = flow.run
        if run is None or (only_failed and run.status != "failed"):
            continue
        icon = {"completed": "✅", "incomplete": "❌ never finished"}.get(str(run.status), "❌")
        if flow.stale:
            icon += " (stale: " + st.text(flow.stale, 80) + ")"
        rows.append([st.code(name) + (f" ({st.text(run.variant, 60)})" if run.variant else ""), icon,
                     _num(run.lines_total, st=st) + (f" × {_num(run.repeats, st=st)}" if run.repeats else ""),
                     _num(run.lines_failed, st=st), _num(run.duration_s, 3, st=st), _num(run.latency_p95, 3, st=st),
                     _num(run.tokens.get("total"), 9, st=st)])
        if run.error:  # the run failed as a whole (or ended with an error): say what, before any line
            errors.append(f"{st.bold(st.code(name))}: the run failed: {st.text(run.error, 500)}")
        lines = run.errors[:errors_per_flow]
        if lines:
            details.append(f"{st.bold(st.code(name))}: " + "; ".join(
                f"line {_num(e.line, st=st)}" + (f" ({st.code(e.node)})" if e.node else "")
                + f": {st.text(e.message, 300)}" for e in lines))
    if not rows:
        return ""
    out = f"{st.heading}Runs\n\n" + _table(rows, ["flow", "status", "lines", "failed", "seconds", "p95 s", "tokens"],
                                            st)
    if errors:
        out += "\n\n" + "\n\n".join(errors)
    if details:
        out += "\n\n" + st.details("First failed lines", "\n\n".join(details))
    return out


def _unchanged(flows: dict[str, FlowResult], st: Style = MARKDOWN) -> str:
    entries = {name: flow.unchanged for name, flow in sorted(flows.items()) if flow.unchanged is not None}
    if not entries:
        return ""
    since = {str(e.since) for e in entries.values()}
    names = ", ".join(st.code(n) + ("" if e.carried_over else " (no baseline results: not gated)")
                      for n, e in entries.items())
    carried = any(e.carried_over for e in entries.values())
    return (f"{st.heading}Not run: unchanged since {st.code(', '.join(sorted(since)))}\n\n{names}"
            + ("; the results shown for them are the baseline's." if carried else "."))


def _cache(flows: dict[str, FlowResult], st: Style = MARKDOWN) -> str:
    stats = [flow.run.llm_cache for flow in flows.values() if flow.run is not None and flow.run.llm_cache is not None]
    if not stats:
        return ""
    hits, misses = sum(s.hits for s in stats), sum(s.misses for s in stats)
    saved = sum(s.tokens_saved for s in stats)
    out = f"LLM cache: {hits} hits, {misses} misses, {saved} tokens saved."
    # what the verdict rests on: answers this change recorded itself are not the base branch's
    for name, flow in sorted(flows.items()):
        runs = [(name, flow.run)] + [(f"{name}/{ev}", entry) for ev, entry in sorted(flow.evaluations.items())]
        for label, run in runs:
            cache = run.llm_cache if run is not None else None
            changed = cache.recorded_in_change if cache is not None else None
            if cache is not None and changed is not None and changed > 0:
                out += (f"\n\n⚠️ {st.code(label)}: {changed} of {cache.hits} replayed answers were "
                        "recorded or altered in this change, not on the base branch: its results rest on answers this "
                        "change wrote (--llm-cache-base-only replays only the base's).")
    return out


def _release(flows: dict[str, FlowResult], st: Style = MARKDOWN) -> str:
    rows = []
    for name, flow in sorted(flows.items()):
        registered, deploy = flow.register, flow.deploy
        if registered is None and deploy is None:
            continue
        smoke = deploy.smoke if deploy else ()
        traffic = ", ".join(f"{st.text(k, 20)} {v}%" for k, v in (deploy.traffic if deploy else {}).items())
        model = (deploy.model if deploy else None) or (f"{registered.name}:{registered.version}" if registered
                                                       else "-")
        endpoint = deploy.endpoint if deploy else None
        rows.append([st.code(name), st.code(model), st.code(endpoint) if endpoint else "-",
                     st.text((deploy.deployment if deploy else None) or "-", 20), traffic or "-",
                     f"{sum(smoke)}/{len(smoke)}" if smoke else "-",
                     {"deployed": "✅", "rolled_back": "❌ rolled back"}.get(str(deploy.status if deploy else None),
                                                                            "-")])
    if not rows:
        return ""
    return f"{st.heading}Release\n\n" + _table(rows, ["flow", "model", "endpoint", "slot", "traffic", "smoke",
                                                        "status"], st)


def _metrics(flows: dict[str, FlowResult], st: Style = MARKDOWN) -> str:
    rows = []
    for name, flow in sorted(flows.items()):
        for ename, evaluation in sorted(flow.evaluations.items()):
            lines = _scored_of_run(evaluation, flow.run, st)
            rows += [[st.code(name), st.code(ename), st.text(metric, 80), _num(value, st=st), lines]
                     for metric, value in sorted(evaluation.metrics.items())]
    return (f"{st.heading}Evaluations\n\n" + _table(rows, ["flow", "evaluation", "metric", "value", "lines scored"], st)
            if rows else "")


def _scored_of_run(evaluation: RunResult, run: RunResult | None, st: Style) -> str:
    """How many lines the evaluation scored, of the lines the batch run ran (failed lines are never scored)."""
    if evaluation.lines_total is None:
        return "-"
    scored = evaluation.lines_total - (evaluation.lines_failed or 0)
    ran = run.lines_total if run is not None else None
    return f"{scored} of {_num(ran, st=st)}" if ran is not None else str(scored)


def _scored_wrong(flows: dict[str, FlowResult], shown: int, st: Style = MARKDOWN) -> str:
    """Per gated metric, the first lines scored otherwise than the baseline; per evaluation with a 0/1 per-line
    score, its first lines scored wrong (input, what was scored, the score). Folded; text from the data and the
    flow, so made inert like all untrusted text."""
    parts = []
    for name, flow in sorted(flows.items()):
        for metric, changed in sorted((flow.gate.changed_lines if flow.gate else {}).items()):
            rows = [[_num(c.line_number, st=st), st.text(c.input, 200), _num(c.was, st=st), _num(c.now, st=st)]
                    for c in changed.first[:shown]]
            if rows:
                parts.append(st.details(f"{st.code(name)} {st.text(metric, 80)}: {_num(changed.changed, st=st)} "
                                        f"of {_num(changed.paired, st=st)} paired lines scored otherwise than "
                                        "the baseline", _table(rows, ["line", "input", "baseline", "now"], st)))
        for ename, evaluation in sorted(flow.evaluations.items()):
            wrong = evaluation.scored_wrong
            if wrong is None or not wrong.wrong:
                continue
            rows = [[_num(w.line_number, st=st), st.text(w.input, 200), st.text(w.evaluated, 200),
                     st.text(w.score, 80)] for w in wrong.first[:shown]]
            title = (f"{st.code(name + '/' + ename)}: {_num(wrong.wrong, st=st)} of "
                     f"{_num(wrong.scored, st=st)} lines scored wrong"
                     + (f" (first {len(rows)})" if len(rows) < int(wrong.wrong or 0) else ""))  # type: ignore[call-overload]
            parts.append(st.details(title, _table(rows, ["line", "input", "expected / output", "score"], st)))
    return f"{st.heading}Lines that changed verdict or scored wrong\n\n" + "\n\n".join(parts) if parts else ""


def _parity(flows: dict[str, FlowResult], shown: int, st: Style = MARKDOWN) -> str:
    """Each flow's agreement with the flow it replaces, and its first disagreeing lines side by side (text from the
    flows, so made inert like every other untrusted text)."""
    parts = []
    for name, flow in sorted(flows.items()):
        entry = flow.evaluations.get("parity")
        parity = entry.parity if entry is not None else None
        if entry is None or parity is None:
            continue
        metrics = entry.metrics
        head = (f"{st.code(name)} vs {st.code(parity.of)} ({st.text(parity.method, 40)}): agreement "
                f"{_num(metrics.get('agreement'), st=st)} on {_num(metrics.get('lines'), st=st)} lines, "
                f"{_num(metrics.get('disagreements'), st=st)} disagree")
        rows = [[_num(d.line, st=st), st.text(d.new, 200), st.text(d.old, 200)] for d in parity.disagreeing[:shown]]
        if rows:
            head += "\n\n" + _table(rows, ["line", name, str(parity.of)], st)
        parts.append(head)
    return f"{st.heading}Parity\n\n" + "\n\n".join(parts) if parts else ""


def _lint(summary: Summary, listed: int, folded: int, st: Style = MARKDOWN) -> str:
    findings = sorted(summary.findings, key=lambda f: (SEVERITY_ORDER.get(f.severity or "", 2), str(f.path),
                                                       f.line or 0))
    if not findings and not summary.listed:
        return ""
    counts = Counter(f.severity for f in findings)
    head = (f"{st.heading}Lint\n\n{counts.get('error', 0)} error{'s' if counts.get('error', 0) != 1 else ''}, "
            f"{counts.get('warning', 0)} warning{'s' if counts.get('warning', 0) != 1 else ''}")
    if not findings:
        return head + " ✅"

    def item(f: Finding) -> str:
        where = st.code(f"{f.path}:{f.line}" if f.line else f.path)
        icon = "❌" if f.severity == "error" else "⚠️"
        return f"- {icon} {where} {st.code(f.rule)} {st.text(f.message, 300)}"

    out = head + "\n\n" + "\n".join(item(f) for f in findings[:listed])
    rest = findings[listed:listed + folded]
    if rest:
        out += "\n\n" + st.details(f"{len(rest)} more", "\n".join(item(f) for f in rest))
    hidden = len(findings) - listed - len(rest)
    if hidden > 0:
        out += f"\n\n…and {hidden} more findings not shown here."
    return out


# detail levels, most to least: (lint listed, lint folded, errors per flow, only failing rows)
_LEVELS = [(50, 1000, 5, False), (20, 200, 3, False), (10, 0, 1, False), (5, 0, 1, True), (0, 0, 0, True)]


def _commit(flows: dict[str, FlowResult]) -> str | None:
    """The commit the gate judged (the same for every flow of one run)."""
    for flow in flows.values():
        commit = flow.gate.provenance.commit if flow.gate is not None else None
        if isinstance(commit, str) and commit:
            return commit
    return None


def _footer(flows: dict[str, FlowResult], run_url: str | None, artifacts_url: str | None) -> str:
    links = [f"[CI run]({run_url})"] if run_url else []
    links += [f"[artifacts]({artifacts_url})"] if artifacts_url else []
    commit = _commit(flows)
    links += [f"commit {code(commit[:12])}"] if commit else []
    return "\n\n---\n" + " · ".join(links) if links else "\n\n---"


def render(summary: Summary, *, limit: int = DEFAULT_LIMIT, run_url: str | None = None,
           full_report: str = "the job summary and the state dir artifact", artifacts_url: str | None = None) -> str:
    """The comment body: starts with the hidden marker, never longer than ``limit`` characters."""
    summary = summary.redacted()  # before escaping, which would break a secret into pieces
    result = outcome(summary)
    flows = summary.flows
    footer = _footer(flows, run_url, artifacts_url)
    for level, (listed, folded, errors, only_failed) in enumerate(_LEVELS):
        parts = [MARKER, f"## {result.headline}", _gate(flows, only_failed), _runs(flows, errors, only_failed),
                 _cache(flows), _parity(flows, errors), "" if only_failed else _metrics(flows),
                 _scored_wrong(flows, 2 * errors), _release(flows),
                 _unchanged(flows),
                 _lint(summary, listed, folded), _elsewhere(summary, MARKDOWN)]
        note = "" if level == 0 else f"\n\n_Shortened to fit the comment; the full report is in {full_report}._"
        body = "\n\n".join(p for p in parts if p) + note + footer
        if len(body) <= limit:
            return body
    short = f"{MARKER}\n## {result.headline}\n\n_The report is too large for a comment; see {full_report}._"
    return short[:limit]


def render_text(summary: Summary) -> str:
    """The same report as plain text for a terminal: no markdown escapes, no HTML, no hidden marker."""
    summary = summary.redacted()
    result = outcome(summary)
    flows = summary.flows
    parts = [result.headline, _gate(flows, False, PLAIN), _runs(flows, 5, False, PLAIN), _cache(flows, PLAIN),
             _parity(flows, 5, PLAIN),
             _metrics(flows, PLAIN), _scored_wrong(flows, 10, PLAIN), _release(flows, PLAIN), _unchanged(flows, PLAIN),
             _lint(summary, 50, 1000, PLAIN), _elsewhere(summary, PLAIN)]
    return "\n\n".join(p for p in parts if p)
