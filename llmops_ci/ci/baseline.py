"""Keep a run's results as the baseline of later pull requests, or say why not.

Only a run that got as far as results may become the baseline: exit 0 (passed) or 1 (a check failed).
Bad input (2), a failed outside service (3), a crash (4), an interrupt (130) or a cancel (143) leave
partial results, and comparing pull requests with them would hide regressions.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from llmops_ci.ci.plan import InputError
from llmops_ci.platforms import Host

KEPT_CODES = frozenset({0, 1})


def decide(exit_code: str, summary: Path) -> str | None:
    """None when the results may be kept, else why not."""
    from llmops_ci.ci.run import describe

    code = exit_code.strip()
    if not code.lstrip("-").isdigit():
        return "the llmops-ci run did not finish (no exit code): no baseline saved"
    if int(code) not in KEPT_CODES:
        return f"the llmops-ci run exited {int(code)} ({describe(int(code))}): its results are not kept as the baseline"
    if not summary.is_file():
        return "no summary.json in the state dir: no baseline saved"
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"summary.json cannot be read ({exc}): no baseline saved"
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("llmops-ci/summary@"):
        return "summary.json is not an llmops-ci summary: no baseline saved"
    return None


def save(environ: Mapping[str, str], host: Host) -> int:
    state_dir = Path(environ.get("LLMOPS_STATE_DIR") or ".llmops")
    out = environ.get("LLMOPS_BASELINE_OUT", "")
    if not out:
        raise InputError("LLMOPS_BASELINE_OUT: name the folder that the baseline is copied to")
    why_not = decide(environ.get("LLMOPS_EXIT_CODE", ""), state_dir / "summary.json")
    if why_not:
        host.message("warning", why_not)
        host.set_output("baseline-ready", "false")
        return 0
    target = Path(out)
    # what the gate needs: summary.json and the per-line scores in runs/ (not pf-home/ or logs/)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copy2(state_dir / "summary.json", target / "summary.json")
    if (state_dir / "runs").is_dir():
        shutil.copytree(state_dir / "runs", target / "runs", symlinks=True)
    host.message("info", f"baseline: the results of this run are kept ({target})")
    host.set_output("baseline-ready", "true")
    return 0
