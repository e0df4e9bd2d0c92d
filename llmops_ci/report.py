"""The state dir rendered as the one PR comment (and the job summary): headline, gate, runs, lint.

The body always fits the platform's limit: when it does not, detail is dropped in order of
least value (the folded lint list, then passing flows' rows, then error lists) and the body
says where the full report is.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from llmops_ci import redaction
from llmops_ci.safe_text import code, md
from llmops_ci.schema import as_dict, as_list

MARKER = "<!-- llmops-ci:comment -->"
GITHUB_LIMIT = 65_536
SEVERITY_ORDER = {"error": 0, "warning": 1}


@dataclass(frozen=True)
class Outcome:
    passed: bool
    headline: str
    failed: list[str] = field(default_factory=list)


def outcome(summary: dict[str, Any]) -> Outcome:
    problems = []
    errors = sum(1 for f in as_list(as_dict(summary.get("lint")).get("findings")) if f.get("severity") == "error")
    if errors:
        problems.append(f"{errors} lint error{'s' if errors != 1 else ''}")
    for name, flow in sorted(as_dict(summary.get("flows")).items()):
        flow = as_dict(flow)
        if as_dict(flow.get("run")).get("status") == "failed":
            problems.append(f"run of {name} failed")
        for ename, evaluation in sorted(as_dict(flow.get("evaluations")).items()):
            if as_dict(evaluation).get("status") == "failed":
                problems.append(f"evaluation {name}/{ename} failed")
        if as_dict(flow.get("gate")).get("passed") is False:
            problems.append(f"gate of {name} failed")
        if as_dict(flow.get("deploy")).get("status") == "rolled_back":
            problems.append(f"deploy of {name} rolled back")
    if problems:
        return Outcome(False, "❌ llmops-ci: " + "; ".join(problems[:5]) + (" …" if len(problems) > 5 else ""),
                       problems)
    return Outcome(True, "✅ llmops-ci: all checks passed")


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, (int, float)):
        return f"{value:.{digits}g}"
    return md(value, 40)


def _table(rows: list[list[str]], headers: list[str]) -> str:
    from tabulate import tabulate  # only when a table is drawn: it is slow to import

    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _gate(flows: dict[str, Any], only_failed: bool) -> str:
    rows = []
    for name, flow in sorted(flows.items()):
        gate = as_dict(as_dict(flow).get("gate"))
        for check in as_list(gate.get("checks")):
            if only_failed and check.get("passed"):
                continue
            interval = as_list(check.get("interval"))
            rows.append([code(name), md(check.get("metric"), 80), _num(check.get("value")), _num(check.get("baseline")),
                         _num(check.get("delta")), f"[{_num(interval[0])}, {_num(interval[1])}]" if interval else "-",
                         f"{check.get('rule')} {_num(check.get('limit'))}",
                         md(check["verdict"], 30) if check.get("verdict") else "-",
                         "✅" if check.get("passed") else "❌"])
    if not rows:
        return ""
    return "### Gate\n\n" + _table(rows, ["flow", "metric", "value", "baseline", "Δ", "95% CI", "rule", "verdict",
                                          ""])


def _runs(flows: dict[str, Any], errors_per_flow: int, only_failed: bool) -> str:
    rows, details = [], []
    for name, flow in sorted(flows.items()):
        run = as_dict(as_dict(flow).get("run"))
        if not run or (only_failed and run.get("status") != "failed"):
            continue
        tokens = as_dict(run.get("tokens")).get("total")
        rows.append([code(name), "✅" if run.get("status") == "completed" else "❌", _num(run.get("lines_total")),
                     _num(run.get("lines_failed")), _num(run.get("duration_s"), 3), _num(run.get("latency_p95"), 3),
                     _num(tokens, 9)])
        errors = as_list(run.get("errors"))[:errors_per_flow]
        if errors:
            details.append(f"**{code(name)}**: " + "; ".join(
                f"line {_num(e.get('line'))}" + (f" ({code(e.get('node'))})" if e.get("node") else "")
                + f": {md(e.get('message'), 300)}" for e in errors))
    if not rows:
        return ""
    out = "### Runs\n\n" + _table(rows, ["flow", "", "lines", "failed", "seconds", "p95 s", "tokens"])
    if details:
        out += "\n\n<details><summary>First failed lines</summary>\n\n" + "\n\n".join(details) + "\n\n</details>"
    return out


def _unchanged(flows: dict[str, Any]) -> str:
    entries = {name: as_dict(as_dict(flow).get("unchanged")) for name, flow in sorted(flows.items())}
    entries = {name: e for name, e in entries.items() if e}
    if not entries:
        return ""
    since = {str(e.get("since")) for e in entries.values()}
    names = ", ".join(code(n) + ("" if e.get("carried_over") else " (no baseline results)") for n, e in entries.items())
    return (f"### Not run: unchanged since {code(', '.join(sorted(since)))}\n\n{names}; "
            "the results shown for them are the baseline's.")


def _cache(flows: dict[str, Any]) -> str:
    stats = [as_dict(as_dict(as_dict(flow).get("run")).get("llm_cache")) for flow in flows.values()]
    stats = [s for s in stats if s]
    if not stats:
        return ""
    hits, misses = sum(int(s.get("hits", 0)) for s in stats), sum(int(s.get("misses", 0)) for s in stats)
    saved = sum(int(s.get("tokens_saved", 0)) for s in stats)
    return f"LLM cache: {hits} hits, {misses} misses, {saved} tokens saved."


def _release(flows: dict[str, Any]) -> str:
    rows = []
    for name, flow in sorted(flows.items()):
        registered = as_dict(as_dict(flow).get("register"))
        deploy = as_dict(as_dict(flow).get("deploy"))
        if not registered and not deploy:
            continue
        smoke = as_list(deploy.get("smoke"))
        passed = sum(1 for s in smoke if as_dict(s).get("passed"))
        traffic = ", ".join(f"{md(k, 20)} {v}%" for k, v in as_dict(deploy.get("traffic")).items())
        model = deploy.get("model") or (f"{registered.get('name')}:{registered.get('version')}" if registered else "-")
        rows.append([code(name), code(model), code(deploy["endpoint"]) if deploy.get("endpoint") else "-",
                     md(deploy.get("deployment") or "-", 20), traffic or "-",
                     f"{passed}/{len(smoke)}" if smoke else "-",
                     {"deployed": "✅", "rolled_back": "❌ rolled back"}.get(str(deploy.get("status")), "-")])
    if not rows:
        return ""
    return "### Release\n\n" + _table(rows, ["flow", "model", "endpoint", "slot", "traffic", "smoke", ""])


def _metrics(flows: dict[str, Any]) -> str:
    rows = []
    for name, flow in sorted(flows.items()):
        for ename, evaluation in sorted(as_dict(as_dict(flow).get("evaluations")).items()):
            metrics = as_dict(as_dict(evaluation).get("metrics"))
            rows += [[code(name), code(ename), md(metric, 80), _num(value)]
                     for metric, value in sorted(metrics.items())]
    return "### Evaluations\n\n" + _table(rows, ["flow", "evaluation", "metric", "value"]) if rows else ""


def _lint(lint: dict[str, Any], listed: int, folded: int) -> str:
    findings = sorted(as_list(lint.get("findings")), key=lambda f: (SEVERITY_ORDER.get(f.get("severity"), 2),
                                                                   str(f.get("path")), f.get("line") or 0))
    if not findings and "findings" not in lint:
        return ""
    counts = Counter(f.get("severity") for f in findings)
    head = (f"### Lint\n\n{counts.get('error', 0)} error{'s' if counts.get('error', 0) != 1 else ''}, "
            f"{counts.get('warning', 0)} warning{'s' if counts.get('warning', 0) != 1 else ''}")
    if not findings:
        return head + " ✅"

    def item(f: dict[str, Any]) -> str:
        where = code(f"{f.get('path')}:{f.get('line')}" if f.get("line") else f.get("path"))
        icon = "❌" if f.get("severity") == "error" else "⚠️"
        return f"- {icon} {where} {code(f.get('rule'))} {md(f.get('message'), 300)}"

    out = head + "\n\n" + "\n".join(item(f) for f in findings[:listed])
    rest = findings[listed:listed + folded]
    if rest:
        out += (f"\n\n<details><summary>{len(rest)} more</summary>\n\n" + "\n".join(item(f) for f in rest)
                + "\n\n</details>")
    hidden = len(findings) - listed - len(rest)
    if hidden > 0:
        out += f"\n\n…and {hidden} more findings not shown here."
    return out


# detail levels, most to least: (lint listed, lint folded, errors per flow, only failing rows)
_LEVELS = [(50, 1000, 5, False), (20, 200, 3, False), (10, 0, 1, False), (5, 0, 1, True), (0, 0, 0, True)]


def render(summary: dict[str, Any], *, limit: int = GITHUB_LIMIT, run_url: str | None = None,
           full_report: str = "the job summary and the state dir artifact") -> str:
    """The comment body: starts with the hidden marker, never longer than ``limit`` characters."""
    summary = redaction.redact_data(summary)  # before escaping, which would break a secret into pieces
    result = outcome(summary)
    flows = as_dict(summary.get("flows"))
    footer = f"\n\n---\n[CI run]({run_url})" if run_url else "\n\n---"
    for level, (listed, folded, errors, only_failed) in enumerate(_LEVELS):
        parts = [MARKER, f"## {result.headline}", _gate(flows, only_failed), _runs(flows, errors, only_failed),
                 _cache(flows), "" if only_failed else _metrics(flows), _release(flows), _unchanged(flows),
                 _lint(as_dict(summary.get("lint")), listed, folded)]
        note = "" if level == 0 else f"\n\n_Shortened to fit the comment; the full report is in {full_report}._"
        body = "\n\n".join(p for p in parts if p) + note + footer
        if len(body) <= limit:
            return body
    short = f"{MARKER}\n## {result.headline}\n\n_The report is too large for a comment; see {full_report}._"
    return short[:limit]
