"""The state dir rendered as the one PR comment (and the job summary): headline, gate, runs, lint.

The body always fits the platform's limit: when it does not, detail is dropped in order of
least value (the folded lint list, then passing flows' rows, then error lists) and the body
says where the full report is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmops_ci.core import redaction
from llmops_ci.core.log import number
from llmops_ci.core.safe_text import code, log_safe, md
from llmops_ci.core.schema import as_dict, as_list
from llmops_ci.report.headline import headline

MARKER = "<!-- llmops-ci:comment -->"
DEFAULT_LIMIT = 65_536  # characters: a body every platform takes as a PR comment; each passes its own limit
SEVERITY_ORDER = {"error": 0, "warning": 1}


@dataclass(frozen=True)
class Outcome:
    passed: bool
    headline: str
    failed: list[str] = field(default_factory=list)
    nothing_ran: bool = False  # no lint, run or evaluation result at all: never green, the step exits 2


RESULT_SECTIONS = ("run", "evaluations", "gate", "register", "deploy", "unchanged")


def _step_problems(summary: dict[str, Any], failed: bool) -> list[str]:
    """Steps that stopped before their results were in (bad input, a dead service, a crash, a signal); with
    ``failed``, also those whose check failed (exit 1), which the results show already unless they do not."""
    problems = []
    for step, stopped in sorted(as_dict(summary.get("steps")).items()):
        stopped = as_dict(stopped)
        code = stopped.get("exit_code")
        if code == 1 and not failed:
            continue
        error = " ".join(str(stopped.get("error") or "").split())
        problems.append(f"{step} {'failed' if code == 1 else 'stopped'} (exit {code})"
                        + (f": {error[:200]}" if error else ""))
    for step in sorted(as_dict(summary.get("internal_error"))):
        problems.append(f"internal error in {step}")
    interrupted = as_dict(summary.get("interrupted"))
    if interrupted:
        problems.append(f"{interrupted.get('step')} was interrupted ({interrupted.get('signal')})")
    return problems


def _flow_problems(name: str, flow: dict[str, Any]) -> list[str]:
    problems = []
    if flow.get("stale"):
        problems.append(f"results of {name} are for an earlier version of it")
    status = as_dict(flow.get("run")).get("status")
    if status == "failed":
        problems.append(f"run of {name} failed")
    elif status == "incomplete":
        problems.append(f"run of {name} never finished")
    for ename, evaluation in sorted(as_dict(flow.get("evaluations")).items()):
        status = as_dict(evaluation).get("status")
        if status == "failed":
            problems.append(f"evaluation {name}/{ename} failed")
        elif status == "incomplete":
            problems.append(f"evaluation {name}/{ename} never finished")
    if as_dict(flow.get("gate")).get("passed") is False:
        problems.append(f"gate of {name} failed")
    if as_dict(flow.get("register")).get("refused"):
        problems.append(f"register of {name} refused")
    if as_dict(flow.get("deploy")).get("status") == "rolled_back":
        problems.append(f"deploy of {name} rolled back")
    return problems


def outcome(summary: dict[str, Any]) -> Outcome:
    problems = _step_problems(summary, failed=False)
    errors = sum(1 for f in as_list(as_dict(summary.get("lint")).get("findings")) if f.get("severity") == "error")
    if errors:
        problems.append(f"{errors} lint error{'s' if errors != 1 else ''}")
    flows = as_dict(summary.get("flows"))
    for name, flow in sorted(flows.items()):
        problems += _flow_problems(name, as_dict(flow))
    problems = problems or _step_problems(summary, failed=True)  # a step that failed is never green
    if problems:
        return Outcome(False, "❌ llmops-ci: " + headline(problems), problems)
    ran = any(section in as_dict(flow) for flow in flows.values() for section in RESULT_SECTIONS)
    if not ran and "lint" not in summary:
        return Outcome(False, "⚠️ llmops-ci: nothing ran: no lint, run or evaluation result in this state dir",
                       ["nothing ran"], nothing_ran=True)
    if not ran:
        return Outcome(True, "✅ llmops-ci: all checks passed (lint only; no flow was run)")
    return Outcome(True, "✅ llmops-ci: all checks passed")


def current(summary: dict[str, Any], config: str | None) -> dict[str, Any]:
    """``summary`` with only the flows of ``config`` (the config a step ran with); results that other configs
    left in a shared state dir move to ``elsewhere`` (flow: config), shown apart and never as current."""
    if config is None:
        return summary
    flows, elsewhere = {}, {}
    for name, flow in as_dict(summary.get("flows")).items():
        owner = as_dict(flow).get("config")
        if owner is None or owner == config:
            flows[name] = flow
        else:
            elsewhere[name] = str(owner)
    if not elsewhere:
        return summary
    return {**summary, "flows": flows, "elsewhere": elsewhere}


def _elsewhere(summary: dict[str, Any], st: Style) -> str:
    elsewhere = as_dict(summary.get("elsewhere"))
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


def _num(value: Any, digits: int = 4, st: Style = MARKDOWN) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, (int, float)):
        return number(value, digits)
    return st.text(value, 40)


def _table(rows: list[list[str]], headers: list[str], st: Style = MARKDOWN) -> str:
    from tabulate import tabulate  # only when a table is drawn: it is slow to import

    return tabulate(rows, headers=headers, tablefmt=st.tablefmt, disable_numparse=True)


def _interval(check: dict[str, Any], st: Style) -> str:
    interval = as_list(check.get("interval"))
    if len(interval) != 2:
        return "-"
    shown = f"[{_num(interval[0], st=st)}, {_num(interval[1], st=st)}]"
    if check.get("line_delta") is None:
        return shown
    # the interval is on the per-line score's scale; its own point value goes with it
    return f"{_num(check['line_delta'], st=st)} {shown} per line"


def _gate(flows: dict[str, Any], only_failed: bool, st: Style = MARKDOWN) -> str:
    rows = []
    for name, flow in sorted(flows.items()):
        gate = as_dict(as_dict(flow).get("gate"))
        for check in as_list(gate.get("checks")):
            if only_failed and check.get("passed"):
                continue
            rule = f"{check.get('rule')} {_num(check.get('limit'), st=st)}"
            if check.get("significant"):
                rule += ", significant: true"
            if check.get("test"):
                rule += f", test: {st.text(check['test'], 30)}"
            rows.append((bool(check.get("passed")), [
                st.code(name), st.text(check.get("metric"), 80), _num(check.get("value"), st=st),
                _num(check.get("baseline"), st=st), _num(check.get("delta"), st=st), _interval(check, st),
                _statistics(check, st), rule, st.text(check["verdict"], 30) if check.get("verdict") else "-",
                "✅" if check.get("passed") else "❌"]))
    if not rows:
        return ""
    ordered = [row for _, row in sorted(rows, key=lambda r: r[0])]  # failing rows first; stable within
    return f"{st.heading}Gate\n\n" + _table(ordered, ["flow", "metric", "value", "baseline", "Δ",
                                                       "95% CI (per-line score)", "p (adj.), mde", "rule", "verdict",
                                                       "result"], st) + _provenance(flows, st)


def _statistics(check: dict[str, Any], st: Style) -> str:
    """The paired row's family-adjusted p, minimum detectable effect, method and clusters."""
    if check.get("p_value") is None:
        return "-"
    out = f"p {_num(check.get('p_value'), 2, st=st)}, mde {_num(check.get('mde'), 2, st=st)}"
    out += f", {st.text(check.get('method'), 30)}" if check.get("method") else ""
    out += f", {_num(check.get('clusters'), st=st)} clusters" if check.get("clusters") else ""
    if check.get("repeats"):  # each line's score is the mean of its repeats; how much they vary within a line
        out += f", {_num(check.get('repeats'), st=st)} repeats (within-line sd {_num(check.get('spread'), 2, st=st)})"
    return out


def _age(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return "age unknown"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} old"
    return "just made"


def _provenance(flows: dict[str, Any], st: Style) -> str:
    """Per flow: the baseline's source and age, its warnings, and the gate rules changed since it."""
    lines = []
    for name, flow in sorted(flows.items()):
        gate = as_dict(as_dict(flow).get("gate"))
        base = as_dict(gate.get("baseline"))
        if base:
            commit = base.get("commit")
            lines.append(f"{st.code(name)}: baseline {st.text(base.get('source'), 120)}"
                         + (f" at {st.code(str(commit)[:12])}" if commit else "") + f", {_age(base.get('age_s'))}")
            lines += [f"⚠️ {st.code(name)}: {st.text(w, 300)}" for w in as_list(base.get("warnings"))]
        for rule in as_list(gate.get("changed_rules")):
            rule = as_dict(rule)
            lines.append(f"⚠️ {st.code(name)}: rule {st.text(rule.get('metric'), 80)} {st.text(rule.get('rule'), 20)} "
                         f"changed in this change: {_num(rule.get('was'), st=st)} → {_num(rule.get('now'), st=st)}")
    return ("\n\n" + "\n".join(f"- {line}" for line in lines)) if lines else ""


def _runs(flows: dict[str, Any], errors_per_flow: int, only_failed: bool, st: Style = MARKDOWN) -> str:
    rows, details, errors = [], [], []
    for name, flow in sorted(flows.items()):
        run = as_dict(as_dict(flow).get("run"))
        if not run or (only_failed and run.get("status") != "failed"):
            continue
        tokens = as_dict(run.get("tokens")).get("total")
        icon = {"completed": "✅", "incomplete": "❌ never finished"}.get(str(run.get("status")), "❌")
        if as_dict(flow).get("stale"):
            icon += " (stale: " + st.text(as_dict(flow)["stale"], 80) + ")"
        rows.append([st.code(name) + (f" ({st.text(run['variant'], 60)})" if run.get("variant") else ""), icon,
                     _num(run.get("lines_total"), st=st) + (f" × {_num(run['repeats'], st=st)}" if run.get("repeats")
                                                           else ""), _num(run.get("lines_failed"), st=st),
                     _num(run.get("duration_s"), 3, st=st), _num(run.get("latency_p95"), 3, st=st),
                     _num(tokens, 9, st=st)])
        if run.get("error"):  # the run failed as a whole (or ended with an error): say what, before any line
            errors.append(f"{st.bold(st.code(name))}: the run failed: {st.text(run['error'], 500)}")
        lines = as_list(run.get("errors"))[:errors_per_flow]
        if lines:
            details.append(f"{st.bold(st.code(name))}: " + "; ".join(
                f"line {_num(e.get('line'), st=st)}" + (f" ({st.code(e.get('node'))})" if e.get("node") else "")
                + f": {st.text(e.get('message'), 300)}" for e in lines))
    if not rows:
        return ""
    out = f"{st.heading}Runs\n\n" + _table(rows, ["flow", "status", "lines", "failed", "seconds", "p95 s", "tokens"],
                                            st)
    if errors:
        out += "\n\n" + "\n\n".join(errors)
    if details:
        out += "\n\n" + st.details("First failed lines", "\n\n".join(details))
    return out


def _unchanged(flows: dict[str, Any], st: Style = MARKDOWN) -> str:
    entries = {name: as_dict(as_dict(flow).get("unchanged")) for name, flow in sorted(flows.items())}
    entries = {name: e for name, e in entries.items() if e}
    if not entries:
        return ""
    since = {str(e.get("since")) for e in entries.values()}
    names = ", ".join(st.code(n) + ("" if e.get("carried_over") else " (no baseline results)")
                      for n, e in entries.items())
    return (f"{st.heading}Not run: unchanged since {st.code(', '.join(sorted(since)))}\n\n{names}; "
            "the results shown for them are the baseline's.")


def _cache(flows: dict[str, Any], st: Style = MARKDOWN) -> str:
    stats = [as_dict(as_dict(as_dict(flow).get("run")).get("llm_cache")) for flow in flows.values()]
    stats = [s for s in stats if s]
    if not stats:
        return ""
    hits, misses = sum(int(s.get("hits", 0)) for s in stats), sum(int(s.get("misses", 0)) for s in stats)
    saved = sum(int(s.get("tokens_saved", 0)) for s in stats)
    out = f"LLM cache: {hits} hits, {misses} misses, {saved} tokens saved."
    # what the verdict rests on: answers this change recorded itself are not the base branch's
    for name, flow in sorted(flows.items()):
        runs = [(name, as_dict(as_dict(flow).get("run")))]
        evaluations = as_dict(as_dict(flow).get("evaluations"))
        runs += [(f"{name}/{ev}", as_dict(entry)) for ev, entry in sorted(evaluations.items())]
        for label, run in runs:
            cache = as_dict(run.get("llm_cache"))
            changed = cache.get("recorded_in_change")
            if isinstance(changed, int) and changed > 0:
                out += (f"\n\n⚠️ {st.code(label)}: {changed} of {int(cache.get('hits', 0))} replayed answers were "
                        "recorded or altered in this change, not on the base branch: its results rest on answers this "
                        "change wrote (--llm-cache-base-only replays only the base's).")
    return out


def _release(flows: dict[str, Any], st: Style = MARKDOWN) -> str:
    rows = []
    for name, flow in sorted(flows.items()):
        registered = as_dict(as_dict(flow).get("register"))
        deploy = as_dict(as_dict(flow).get("deploy"))
        if not registered and not deploy:
            continue
        smoke = as_list(deploy.get("smoke"))
        passed = sum(1 for s in smoke if as_dict(s).get("passed"))
        traffic = ", ".join(f"{st.text(k, 20)} {v}%" for k, v in as_dict(deploy.get("traffic")).items())
        model = deploy.get("model") or (f"{registered.get('name')}:{registered.get('version')}" if registered else "-")
        rows.append([st.code(name), st.code(model), st.code(deploy["endpoint"]) if deploy.get("endpoint") else "-",
                     st.text(deploy.get("deployment") or "-", 20), traffic or "-",
                     f"{passed}/{len(smoke)}" if smoke else "-",
                     {"deployed": "✅", "rolled_back": "❌ rolled back"}.get(str(deploy.get("status")), "-")])
    if not rows:
        return ""
    return f"{st.heading}Release\n\n" + _table(rows, ["flow", "model", "endpoint", "slot", "traffic", "smoke",
                                                        "status"], st)


def _metrics(flows: dict[str, Any], st: Style = MARKDOWN) -> str:
    rows = []
    for name, flow in sorted(flows.items()):
        for ename, evaluation in sorted(as_dict(as_dict(flow).get("evaluations")).items()):
            metrics = as_dict(as_dict(evaluation).get("metrics"))
            lines = _scored_of_run(as_dict(evaluation), as_dict(as_dict(flow).get("run")), st)
            rows += [[st.code(name), st.code(ename), st.text(metric, 80), _num(value, st=st), lines]
                     for metric, value in sorted(metrics.items())]
    return (f"{st.heading}Evaluations\n\n" + _table(rows, ["flow", "evaluation", "metric", "value", "lines scored"], st)
            if rows else "")


def _scored_of_run(evaluation: dict[str, Any], run: dict[str, Any], st: Style) -> str:
    """How many lines the evaluation scored, of the lines the batch run ran (failed lines are never scored)."""
    total = evaluation.get("lines_total")
    if not isinstance(total, int):
        return "-"
    scored = total - int(evaluation.get("lines_failed") or 0)
    ran = run.get("lines_total")
    return f"{scored} of {_num(ran, st=st)}" if isinstance(ran, int) else str(scored)


def _scored_wrong(flows: dict[str, Any], shown: int, st: Style = MARKDOWN) -> str:
    """Per gated metric, the first lines scored otherwise than the baseline; per evaluation with a 0/1 per-line
    score, its first lines scored wrong (input, what was scored, the score). Folded; text from the data and the
    flow, so made inert like all untrusted text."""
    parts = []
    for name, flow in sorted(flows.items()):
        for metric, changed in sorted(as_dict(as_dict(as_dict(flow).get("gate")).get("changed_lines")).items()):
            changed = as_dict(changed)
            rows = [[_num(c.get("line_number"), st=st), st.text(c.get("input"), 200), _num(c.get("was"), st=st),
                     _num(c.get("now"), st=st)] for c in as_list(changed.get("first"))[:shown] if isinstance(c, dict)]
            if rows:
                parts.append(st.details(f"{st.code(name)} {st.text(metric, 80)}: {_num(changed.get('changed'), st=st)} "
                                        f"of {_num(changed.get('paired'), st=st)} paired lines scored otherwise than "
                                        "the baseline", _table(rows, ["line", "input", "baseline", "now"], st)))
        for ename, evaluation in sorted(as_dict(as_dict(flow).get("evaluations")).items()):
            wrong = as_dict(as_dict(evaluation).get("scored_wrong"))
            if not wrong.get("wrong"):
                continue
            rows = [[_num(w.get("line_number"), st=st), st.text(w.get("input"), 200), st.text(w.get("evaluated"), 200),
                     st.text(w.get("score"), 80)] for w in as_list(wrong.get("first"))[:shown] if isinstance(w, dict)]
            title = (f"{st.code(name + '/' + ename)}: {_num(wrong.get('wrong'), st=st)} of "
                     f"{_num(wrong.get('scored'), st=st)} lines scored wrong"
                     + (f" (first {len(rows)})" if len(rows) < int(wrong.get("wrong") or 0) else ""))
            parts.append(st.details(title, _table(rows, ["line", "input", "expected / output", "score"], st)))
    return f"{st.heading}Lines that changed verdict or scored wrong\n\n" + "\n\n".join(parts) if parts else ""


def _parity(flows: dict[str, Any], shown: int, st: Style = MARKDOWN) -> str:
    """Each flow's agreement with the flow it replaces, and its first disagreeing lines side by side (text from the
    flows, so made inert like every other untrusted text)."""
    parts = []
    for name, flow in sorted(flows.items()):
        entry = as_dict(as_dict(as_dict(flow).get("evaluations")).get("parity"))
        if not entry or "of" not in entry:
            continue
        metrics = as_dict(entry.get("metrics"))
        head = (f"{st.code(name)} vs {st.code(entry.get('of'))} ({st.text(entry.get('method'), 40)}): agreement "
                f"{_num(metrics.get('agreement'), st=st)} on {_num(metrics.get('lines'), st=st)} lines, "
                f"{_num(metrics.get('disagreements'), st=st)} disagree")
        rows = [[_num(d.get("line"), st=st), st.text(d.get("new"), 200), st.text(d.get("old"), 200)]
                for d in as_list(entry.get("disagreeing"))[:shown] if isinstance(d, dict)]
        if rows:
            head += "\n\n" + _table(rows, ["line", name, str(entry.get("of"))], st)
        parts.append(head)
    return f"{st.heading}Parity\n\n" + "\n\n".join(parts) if parts else ""


def _lint(lint: dict[str, Any], listed: int, folded: int, st: Style = MARKDOWN) -> str:
    findings = sorted(as_list(lint.get("findings")), key=lambda f: (SEVERITY_ORDER.get(f.get("severity"), 2),
                                                                   str(f.get("path")), f.get("line") or 0))
    if not findings and "findings" not in lint:
        return ""
    counts = Counter(f.get("severity") for f in findings)
    head = (f"{st.heading}Lint\n\n{counts.get('error', 0)} error{'s' if counts.get('error', 0) != 1 else ''}, "
            f"{counts.get('warning', 0)} warning{'s' if counts.get('warning', 0) != 1 else ''}")
    if not findings:
        return head + " ✅"

    def item(f: dict[str, Any]) -> str:
        where = st.code(f"{f.get('path')}:{f.get('line')}" if f.get("line") else f.get("path"))
        icon = "❌" if f.get("severity") == "error" else "⚠️"
        return f"- {icon} {where} {st.code(f.get('rule'))} {st.text(f.get('message'), 300)}"

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


def _commit(flows: dict[str, Any]) -> str | None:
    """The commit the gate judged (the same for every flow of one run)."""
    for flow in flows.values():
        commit = as_dict(as_dict(as_dict(flow).get("gate")).get("provenance")).get("commit")
        if isinstance(commit, str) and commit:
            return commit
    return None


def _footer(flows: dict[str, Any], run_url: str | None, artifacts_url: str | None) -> str:
    links = [f"[CI run]({run_url})"] if run_url else []
    links += [f"[artifacts]({artifacts_url})"] if artifacts_url else []
    commit = _commit(flows)
    links += [f"commit {code(commit[:12])}"] if commit else []
    return "\n\n---\n" + " · ".join(links) if links else "\n\n---"


def render(summary: dict[str, Any], *, limit: int = DEFAULT_LIMIT, run_url: str | None = None,
           full_report: str = "the job summary and the state dir artifact", artifacts_url: str | None = None) -> str:
    """The comment body: starts with the hidden marker, never longer than ``limit`` characters."""
    summary = redaction.redact_data(summary)  # before escaping, which would break a secret into pieces
    result = outcome(summary)
    flows = as_dict(summary.get("flows"))
    footer = _footer(flows, run_url, artifacts_url)
    for level, (listed, folded, errors, only_failed) in enumerate(_LEVELS):
        parts = [MARKER, f"## {result.headline}", _gate(flows, only_failed), _runs(flows, errors, only_failed),
                 _cache(flows), _parity(flows, errors), "" if only_failed else _metrics(flows),
                 _scored_wrong(flows, 2 * errors), _release(flows),
                 _unchanged(flows),
                 _lint(as_dict(summary.get("lint")), listed, folded), _elsewhere(summary, MARKDOWN)]
        note = "" if level == 0 else f"\n\n_Shortened to fit the comment; the full report is in {full_report}._"
        body = "\n\n".join(p for p in parts if p) + note + footer
        if len(body) <= limit:
            return body
    short = f"{MARKER}\n## {result.headline}\n\n_The report is too large for a comment; see {full_report}._"
    return short[:limit]


def render_text(summary: dict[str, Any]) -> str:
    """The same report as plain text for a terminal: no markdown escapes, no HTML, no hidden marker."""
    summary = redaction.redact_data(summary)
    result = outcome(summary)
    flows = as_dict(summary.get("flows"))
    parts = [result.headline, _gate(flows, False, PLAIN), _runs(flows, 5, False, PLAIN), _cache(flows, PLAIN),
             _parity(flows, 5, PLAIN),
             _metrics(flows, PLAIN), _scored_wrong(flows, 10, PLAIN), _release(flows, PLAIN), _unchanged(flows, PLAIN),
             _lint(as_dict(summary.get("lint")), 50, 1000, PLAIN), _elsewhere(summary, PLAIN)]
    return "\n\n".join(p for p in parts if p)
