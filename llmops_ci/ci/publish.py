"""The publish step: the only step of a wrapper that holds the CI token (``GITHUB_TOKEN``,
``SYSTEM_ACCESSTOKEN``). It runs no flow code: it reads the state dir that the run step left, writes the one PR
comment or thread, and sets the outputs (passed, summary, comment-url, exit-code, metrics).

Flow code runs in the run step, whose environment (and whose ancestors' environments, ``/proc/<ppid>/environ``)
hold no CI token: a process can read its parent's environment, so dropping variables in a child is not enough.

It must also work when the job stopped before anything ran (a refused event, a bad input, a failed install):
then it runs on the bare interpreter, finds no summary, and still sets ``passed=false``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from llmops_ci.ci.plan import InputError, read_inputs
from llmops_ci.core.http import Http
from llmops_ci.platforms import PLATFORMS, Host, Publication


def metric_values(summary: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{flow: {"<evaluation>.<metric>": {"value": v, "baseline": b, "delta": v - b}}}`` for every numeric metric
    of every flow's evaluations; baseline and delta come from the gate's checks (null without a baseline)."""
    result: dict[str, dict[str, dict[str, float | None]]] = {}
    flows = summary.get("flows")
    for flow, data in sorted((flows if isinstance(flows, dict) else {}).items()):
        if not isinstance(data, dict):
            continue
        baselines: dict[str, float] = {}
        gate = data.get("gate")
        for check in (gate.get("checks") or []) if isinstance(gate, dict) else []:
            if isinstance(check, dict) and number(check.get("baseline")) is not None:
                baselines[str(check.get("metric"))] = float(check["baseline"])
        evaluations = data.get("evaluations")
        for evaluation, ev in sorted((evaluations if isinstance(evaluations, dict) else {}).items()):
            metrics = ev.get("metrics") if isinstance(ev, dict) else None
            for metric, value in sorted((metrics if isinstance(metrics, dict) else {}).items()):
                v = number(value)
                if v is None:
                    continue
                name = f"{evaluation}.{metric}"
                base = baselines.get(name)
                result.setdefault(str(flow), {})[name] = {
                    "value": v, "baseline": base, "delta": None if base is None else round(v - base, 12)}
    return result


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def output_name(*parts: str) -> str:
    """``metric_<flow>_<evaluation>_<metric>``: Azure Pipelines variable names take letters, digits, '.' and '_'
    only (and GitHub output names should too), so every other character becomes '_'."""
    return "_".join("".join(c if c.isalnum() or c == "_" else "_" for c in part) for part in parts)


def publish(environ: Mapping[str, str], host: Host, out: TextIO) -> int:
    """Always exit 0: the run step's exit code is the job's verdict; a comment that cannot be written never
    fails a build."""
    code = environ.get("LLMOPS_EXIT_CODE", "").strip()
    if (refusal := host.refusal()) or not code.lstrip("-").isdigit():
        # the run step never ran (a refused event, a stop before it): whatever summary.json the workspace holds
        # is not this run's (on a refused event it is the PR's own file), so nothing is published from it
        host.message("warning", "llmops-ci did not run (an earlier step of the job stopped): passed=false")
        for name, value in (("passed", "false"), ("exit-code", "none"), ("summary", ""), ("comment-url", ""),
                            ("metrics", "{}")):
            host.set_output(name, value)
        return 2 if refusal else 0
    try:
        inputs = read_inputs(environ, host)
    except InputError:  # the run step (or prepare) already said why; the outputs still say "not passed"
        inputs = None
    state_dir = Path(environ.get("LLMOPS_STATE_DIR") or Path(inputs.working_directory if inputs else ".")
                     / (inputs.state_dir if inputs else ".llmops"))
    summary_path = state_dir / "summary.json"
    summary: dict[str, Any] | None = None
    if summary_path.is_file():
        try:
            data = json.loads(summary_path.read_text(encoding="utf-8"))
            summary = data if isinstance(data, dict) else None
        except (OSError, ValueError) as exc:
            host.message("warning", f"could not read {summary_path}: {exc}")
    comment_url = ""
    passed = code == "0" and summary is not None and results_passed(summary)
    if summary is not None and inputs is not None:
        comment_url = _publish_comment(environ, host, out, inputs.comment, summary, state_dir)
    metrics = metric_values(summary or {})
    host.set_output("passed", "true" if passed else "false")
    host.set_output("exit-code", code)
    host.set_output("summary", str(summary_path.absolute()) if summary is not None else "")
    host.set_output("comment-url", comment_url)
    host.set_output("metrics", json.dumps(metrics, sort_keys=True, separators=(",", ":")))
    for flow, values in metrics.items():
        for name, row in values.items():
            evaluation, _, metric = name.partition(".")
            host.set_output(output_name("metric", flow, evaluation, metric), format_number(row["value"]))
            host.set_output(output_name("delta", flow, evaluation, metric), format_number(row["delta"]))
    return 0


def results_passed(summary: dict[str, Any]) -> bool:
    """The report's own verdict (the same rule as the run step's ``passed``); on the bare interpreter, where the
    report module cannot be imported, the exit code alone decides."""
    try:
        from llmops_ci.report.comment import outcome
        from llmops_ci.results.summary import Summary
    except ImportError:
        return True
    return outcome(Summary.parse(summary)).passed


def format_number(value: float | None) -> str:
    return "" if value is None else repr(value)


def _publish_comment(environ: Mapping[str, str], host: Host, out: TextIO, comment: bool, summary: dict[str, Any],
                     state_dir: Path) -> str:
    """The PR comment (GitHub) or thread (Azure Repos) with the platform's own publisher; returns its URL (empty
    when none was written). Needs llmops-ci's dependencies (the installed venv)."""
    if not comment:
        return ""
    if why := host.comment_unsupported():
        host.message("info", why)
        return ""
    try:
        import llmops_ci.report.comment  # noqa: F401  (what the publisher renders with)
        from llmops_ci.results.summary import Summary
    except ImportError as exc:  # the bare interpreter: llmops-ci was never installed
        host.message("warning", f"no PR comment: llmops-ci is not installed in this job ({exc})")
        return ""
    pr = host.find_pull_request(Http())
    if pr is None:
        return ""
    # the run step wrote the job summary and this step sets the outputs: the publisher writes the comment alone
    publication = Publication(Summary.parse(summary), state_dir, comment=True, annotate=False, pr=pr,
                              comment_only=True)
    result = PLATFORMS[host.name].publish(publication, environ, Http(), out)
    host.message("info", f"comment {result.comment}{': ' + result.comment_url if result.comment_url else ''}")
    return result.comment_url or ""
