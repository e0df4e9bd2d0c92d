"""The one exception hierarchy; ``cli.main`` turns each into its exit code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One located defect in an input file."""

    path: str
    line: int | None
    column: int | None
    message: str
    rule: str = "config-invalid"

    def where(self) -> str:
        if self.line is None:
            return self.path
        if self.column is None:
            return f"{self.path}:{self.line}"
        return f"{self.path}:{self.line}:{self.column}"

    def __str__(self) -> str:
        return f"{self.where()}: {self.message}"


class LlmopsError(Exception):
    """Base class: every expected failure carries its exit code and a message saying what to do."""

    return_code = 2


class CheckFailed(LlmopsError):
    """A check ran and failed: lint errors, failed lines, a broken gate rule, a failed smoke test."""

    return_code = 1


class UsageError(LlmopsError):
    """Bad command line, missing file or bad input that the user must fix."""

    return_code = 2


class ConfigError(UsageError):
    """One or more located problems in a config or input file."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ServiceError(LlmopsError):
    """An outside service (LLM endpoint, Azure, GitHub, Azure DevOps) failed after retries."""

    return_code = 3


INTERNAL_ERROR = 4
INTERRUPTED = 130
TERMINATED = 143
# When several steps ran (pr), the code that says most about what to do: a stop first, then a bug in
# llmops-ci, then bad input, then an outside service, then a failed check.
PRECEDENCE = (INTERRUPTED, TERMINATED, INTERNAL_ERROR, UsageError.return_code, ServiceError.return_code,
              CheckFailed.return_code)


def combined(codes: list[int]) -> int:
    """One exit code for several steps."""
    for code in PRECEDENCE:
        if code in codes:
            return code
    return max(codes, default=0)
