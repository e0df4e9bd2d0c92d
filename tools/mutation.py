"""Mutation check of the modules whose behaviour the fast tests must pin (gate, redaction, record/replay, changes).

Runs mutmut 3 (in the ``[test]`` extra) on a scratch copy of the checkout, one group of modules at a time with the
fast tests that cover them, and prints per module: mutants, killed, survived (and how many of those only change
message text: the mutant's diff touches nothing but string literals), not run by any test, and the score.

    python tools/mutation.py                 # every group (slow: tens of minutes on 2 cores)
    python tools/mutation.py gate redaction  # some groups
    python tools/mutation.py --list          # the groups, their modules and tests
    python tools/mutation.py --survivors gate  # also print the diff of each behaviour-changing survivor

Not part of the normal test run. See docs/contributing.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# group -> (modules mutated, test files that cover them; run with -m "not executor")
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gate": (
        ("llmops_ci/gate/verdict.py", "llmops_ci/gate/stats.py", "llmops_ci/gate/keys.py",
         "llmops_ci/gate/provenance.py", "llmops_ci/gate/repeats.py"),
        ("tests/gate/test_gate*.py",),
    ),
    "redaction": (
        ("llmops_ci/core/redaction.py", "llmops_ci/core/safe_text.py"),
        ("tests/core/test_redaction*.py", "tests/core/test_safe_text*.py",
         "tests/diagnostics/test_secrets_hardening.py"),
    ),
    "changes": (
        ("llmops_ci/project/changes.py",),
        ("tests/project/test_changes*.py",),
    ),
    "llm_cache": (
        ("llmops_ci/llm/cache.py", "llmops_ci/llm/cassette.py", "llmops_ci/llm/cassette_diff.py"),
        ("tests/llm/test_llm_cache*.py", "tests/llm/test_cassette_diff*.py", "tests/llm/test_hostile_cassette.py",
                                                          "tests/results/test_provenance.py"),
    ),
}

PYTEST_ARGS = ["-m", "not executor", "-p", "no:randomly", "-p", "no:cacheprovider", "-q"]
KILLED = {1, 3, 37}
SURVIVED = {0}
NO_TESTS = {5, 33}


@dataclass
class Tally:
    mutants: int = 0
    killed: int = 0
    survived: int = 0
    survived_text: int = 0
    no_tests: int = 0
    other: int = 0  # timeouts count as killed by mutmut's own score; anything else is listed
    survivors: list[str] = field(default_factory=list)
    untested: set[str] = field(default_factory=set)

    @property
    def score(self) -> float:
        return 100.0 * self.killed / self.mutants if self.mutants else 0.0

    @property
    def behaviour_score(self) -> float:
        """Killed among the mutants that change behaviour (not only message text)."""
        behaviour = self.mutants - self.survived_text
        return 100.0 * self.killed / behaviour if behaviour else 0.0


def _tests(patterns: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for pattern in patterns:
        found += sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(pattern))
    return found


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def prepare(work: Path, modules: tuple[str, ...], tests: list[str]) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".llmops", ".mypy_cache", ".ruff_cache")
    for name in ("llmops_ci", "tests", "examples"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, work / name, ignore=ignore)
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    pyproject += (
        "\n[tool.mutmut]\n"
        'source_paths = ["llmops_ci"]\n'
        f"only_mutate = {_toml_list(list(modules))}\n"
        f"pytest_add_cli_args = {_toml_list(PYTEST_ARGS)}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        "use_git_change_detection = false\n"
    )
    (work / "pyproject.toml").write_text(pyproject, encoding="utf-8")


def _string_only(diff_a: str, diff_b: str) -> bool:
    """True when the two versions of a function differ only inside string literals."""

    def tokens(code: str) -> list[tuple[int, str]]:
        out = []
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
                continue
            fstring = getattr(tokenize, "FSTRING_MIDDLE", None)
            if tok.type == tokenize.STRING or (fstring is not None and tok.type == fstring):
                out.append((tokenize.STRING, ""))
            else:
                out.append((tok.type, tok.string))
        return out

    try:
        return diff_a != diff_b and tokens(diff_a) == tokens(diff_b)
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return False


def collect(work: Path, modules: tuple[str, ...], show: bool) -> dict[str, Tally]:
    """Read mutmut's results (run inside ``work``, where mutmut keeps them)."""
    import libcst as cst
    from mutmut.mutation.data import SourceFileMutationData  # type: ignore[import-not-found]
    from mutmut.mutation.diff_apply import (  # type: ignore[import-not-found]
        read_mutant_function,
        read_mutants_module,
        read_original_function,
    )

    os.chdir(work)
    tallies: dict[str, Tally] = {}
    for module in modules:
        tally = tallies.setdefault(module, Tally())
        data = SourceFileMutationData(path=Path(module))
        try:
            data.load()
        except FileNotFoundError:
            continue
        mutated = read_mutants_module(Path(module))
        for key, code in data.exit_code_by_key.items():
            tally.mutants += 1
            function = key.rsplit("__mutmut_", 1)[0].split("x_", 1)[-1].replace("ǁ", ".")
            if code in KILLED or code in {24, -24, 36, 152, 255}:  # a timeout is a detection, as mutmut counts it
                tally.killed += 1
            elif code in NO_TESTS:
                tally.no_tests += 1
                tally.untested.add(function)
            elif code in SURVIVED:
                tally.survived += 1
                orig = cst.Module([read_original_function(mutated, key)]).code
                mutant = cst.Module([read_mutant_function(mutated, key)]).code
                if _string_only(orig, mutant):
                    tally.survived_text += 1
                else:
                    tally.survivors.append(key)
                    if show:
                        import difflib

                        diff = difflib.unified_diff(orig.splitlines(), mutant.splitlines(), key, key, lineterm="", n=1)
                        print("\n".join(diff), "\n")
            else:
                tally.other += 1
                tally.survivors.append(f"{key} (exit {code})")
    os.chdir(ROOT)
    return tallies


def run_group(name: str, jobs: int, keep: Path | None, show: bool) -> dict[str, Tally]:
    modules, patterns = GROUPS[name]
    tests = _tests(patterns)
    work = keep / name if keep else Path(tempfile.mkdtemp(prefix=f"mutation-{name}-"))
    if work.exists() and keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        prepare(work, modules, tests)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs)], cwd=work,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-4000:], file=sys.stderr)
            raise SystemExit(f"mutmut failed on group {name} (exit {proc.returncode})")
        return collect(work, modules, show)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="*", help=f"groups to run (default all): {', '.join(GROUPS)}")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="mutants run in parallel")
    parser.add_argument("--keep", type=Path, help="keep mutmut's work directories here (to browse the results)")
    parser.add_argument("--survivors", action="store_true", help="print the diff of behaviour-changing survivors")
    parser.add_argument("--list", action="store_true", help="print the groups, modules and tests, then stop")
    args = parser.parse_args(argv)
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    groups = args.groups or list(GROUPS)
    if args.list:
        for name in groups:
            modules, patterns = GROUPS[name]
            print(f"{name}: {' '.join(modules)}\n    tests: {' '.join(_tests(patterns))}")
        return 0
    rows: list[tuple[str, Tally]] = []
    for name in groups:
        rows += list(run_group(name, args.jobs, args.keep.resolve() if args.keep else None, args.survivors).items())
    print(f"{'module':<30} {'mutants':>7} {'killed':>6} {'survived (text)':>16} {'not run':>7} {'score':>7} "
          f"{'behaviour':>9}")
    for module, t in rows:
        print(f"{module:<30} {t.mutants:>7} {t.killed:>6} {f'{t.survived} ({t.survived_text})':>16} "
              f"{t.no_tests:>7} {t.score:>6.1f}% {t.behaviour_score:>8.1f}%")
    for module, t in rows:
        if t.untested:
            print(f"not run by any test in {module}: {', '.join(sorted(t.untested))}")
        if t.other:
            print(f"{module}: {t.other} mutant(s) neither killed nor survived: see --keep and `mutmut browse`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
