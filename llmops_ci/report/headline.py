"""The report's one-line headline: the problems themselves when a few fit, else counts and the worst one."""

from __future__ import annotations

from collections import Counter

# the kinds of problem, worst first: (what the text starts with or holds, how a count of them reads)
_KINDS = (("internal error", "internal errors"), ("was interrupted", "interrupted"), ("stopped (exit", "steps stopped"),
          ("failed (exit", "steps failed"), ("never finished", "unfinished"), ("run of", "runs failed"),
          ("evaluation ", "evaluations failed"), ("gate of", "gates failed"), ("deploy of", "deploys rolled back"),
          ("register of", "registrations refused"), ("results of", "stale results"), ("lint error", "lint errors"))
HEADLINE_LIMIT = 160


def _kind(problem: str) -> int:
    for rank, (mark, _) in enumerate(_KINDS):
        if problem.startswith(mark) or mark in problem.split(":")[0]:
            return rank
    return len(_KINDS)


def headline(problems: list[str]) -> str:
    """One line whatever the count: the problems themselves when a few fit, else how many of each kind and the
    worst one (a stopped step before a failed run before a failed gate before lint)."""
    joined = " ".join("; ".join(problems).split())
    if len(problems) == 1 or (len(problems) <= 3 and len(joined) <= HEADLINE_LIMIT):
        return joined if len(joined) <= HEADLINE_LIMIT else joined[:HEADLINE_LIMIT - 1] + "…"
    counts: Counter[int] = Counter(_kind(p) for p in problems)
    parts = []
    for rank, n in sorted(counts.items()):
        if rank == len(_KINDS):
            parts.append(f"{n} other")
        elif _KINDS[rank][1] == "lint errors":  # its problem text is already a count
            parts += [p for p in problems if _kind(p) == rank]
        else:
            parts.append(f"{n} {_KINDS[rank][1]}")
    worst = " ".join(min(problems, key=_kind).split())
    worst = worst if len(worst) <= 100 else worst[:99] + "…"
    return f"{len(problems)} problems ({', '.join(parts)}); worst: {worst}"
