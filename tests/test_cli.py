"""The command line end to end: exit codes, formats, the state dir, and no heavy imports in lint."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops_ci import __version__, cli
from llmops_ci.steps import Step
from tests.helpers.projects import CliResult, Project

Cli = Callable[..., CliResult]


def test_version_and_help(cli: Cli) -> None:
    assert cli("--version") == CliResult(0, f"llmops-ci {__version__}\n", "")
    assert cli("lint", "--help").code == 0
    no_step = cli()
    assert no_step.code == 2 and "required" in no_step.err


def test_the_command_starts_with_its_import_objects_out_of_the_collectors_passes() -> None:
    """``python -m llmops_ci`` imports with the collector off; what the imports made is frozen before it is on."""
    code = ("import gc, sys\nimport llmops_ci.cli as c\n"
            "c.main = lambda argv=None: print(gc.isenabled(), len(gc.get_objects()) < 5_000) or 0\n"
            "from llmops_ci.__main__ import run\nsys.exit(run())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.split()) == (0, ["True", "True"]), done.stderr


def test_lint_clean_project(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project()
    result = cli("lint")
    assert result.code == 0, result
    assert "No problems found (1 flow and 1 evaluation checked)." in result.out
    summary = json.loads(proj.read(".llmops/summary.json"))
    assert summary == {"schema": "llmops-ci/summary@1", "lint": {"findings": []}}


def test_lint_errors_exit_1_and_json(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project()
    proj.replace("flows/classify/flow.dag.yaml", "raw: ${classify.output}", "raw: ${clasify.output}")
    result = cli("lint", "--format", "json", "--state-dir", "out/state")
    assert result.code == 1
    findings = json.loads(result.out)["findings"]
    # the misspelt reference also leaves the node it meant unread
    assert [(f["rule"], f["path"], f["line"], f["column"]) for f in findings] == [
        ("node-unused", "flows/classify/flow.dag.yaml", 19, 9),
        ("node-ref-unknown", "flows/classify/flow.dag.yaml", 27, 10)]
    assert "lint found 1 error" in result.err
    assert json.loads(proj.read("out/state/summary.json"))["lint"]["findings"] == findings


def test_warnings_only_exit_0(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project()
    proj.replace("llmops.yaml", "text: ${data.text}", "txt: ${data.text}")
    result = cli("lint")
    assert result.code == 0 and "0 errors, 1 warning" in result.out


def test_output_file_keeps_text_in_log(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project()
    result = cli("lint", "--format", "sarif", "--output", "reports/lint.sarif")
    assert result.code == 0
    assert json.loads(proj.read("reports/lint.sarif"))["version"] == "2.1.0"
    assert "No problems found" in result.out


def test_summary_keeps_other_sections(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project({".llmops/summary.json": '{"schema": "llmops-ci/summary@1", "flows": {"x": {}}}'})
    assert cli("lint").code == 0
    assert json.loads(proj.read(".llmops/summary.json"))["flows"] == {"x": {}}


@pytest.mark.parametrize(("argv", "message"), [
    (("lint", "--config", "nope.yaml"), "nope.yaml: config file not found"),
    (("lint", "--config", "flows"), "flows: a folder, not a config file"),
    (("batch-run", "--config", "flows"), "flows: a folder, not a config file"),
    (("pr", "--config", "flows"), "flows: a folder, not a config file"),
    (("gate", "--config", "/dev/null"), "/dev/null: not a regular file"),
    (("pr", "--pr", "0"), "argument --pr: must be 1 or more"),
    (("comment", "--pr", "x"), "argument --pr: 'x' is not a whole number"),
    (("lint", "flows/none"), "flows/none: no such file or folder"),
    (("lint", "--flow", "clasify"), "did you mean 'classify'"),
    (("lint", "flows/classify", "--config", "llmops.yaml"), "either flow folders or --config"),
    (("lint", "--format", "xml"), "invalid choice"),
])
def test_usage_errors_exit_2(argv: tuple[str, ...], message: str, cli: Cli, project: Callable[..., Project]) -> None:
    project()
    result = cli(*argv)
    assert result.code == 2
    assert message in result.err
    assert "Traceback" not in result.err


def test_corrupt_summary_is_exit_2(cli: Cli, project: Callable[..., Project]) -> None:
    project({".llmops/summary.json": "{not json"})
    result = cli("lint")
    assert result.code == 2 and ".llmops/summary.json: not a readable summary" in result.err


def test_no_config_discovers_flows(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project()
    proj.path("llmops.yaml").unlink()
    result = cli("lint")
    # without the config, the variant and connections are not checked, the flows themselves are
    assert result.code == 0 and "(2 flows checked)" in result.out


def test_lint_dir_finds_the_flows_below_it_and_leaves_no_state(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project()
    proj.path("llmops.yaml").unlink()
    result = cli("lint", "flows")  # like `ruff check DIR`: the flows below it, not "DIR is not a flow"
    assert result.code == 0, result.out + result.err
    assert "(2 flows checked)" in result.out
    assert not proj.path(".llmops").exists()  # no config, no --state-dir: nothing written
    assert cli("lint", "flows", "--state-dir", "state").code == 0
    assert "lint" in json.loads(proj.read("state/summary.json"))
    empty = cli("lint", "data")
    assert empty.code == 2 and "data: no flows found in or below it" in empty.err


def test_no_flows_anywhere(cli: Cli, project: Callable[..., Project]) -> None:
    project({"README.md": "nothing"}, base=False)
    result = cli("lint")
    assert result.code == 2 and "no flows found" in result.err


def test_github_platform_annotations_in_log(cli: Cli, project: Callable[..., Project]) -> None:
    proj = project()
    proj.replace("flows/classify/flow.dag.yaml", "api: chat\n", "api: chatt\n")
    result = cli("lint", "--platform", "github")
    assert result.code == 1
    assert "::error::lint found 1 error" in result.err


class _Boom(Step):
    name = "boom"
    help = "raises"

    def __init__(self, exc: BaseException | None) -> None:
        self.exc = exc

    def add_arguments(self, parser: object) -> None:
        return None

    def run(self, settings: object, ctx: object) -> int:
        if self.exc is None:
            return 0
        raise self.exc


def test_interrupt_is_130_and_unexpected_errors_keep_traceback(cli: Cli, monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # the default state dir (.llmops) is written where the step runs, not in the repo
    monkeypatch.setitem(cli_steps(), "boom", _Boom(KeyboardInterrupt()))
    assert cli("boom").code == 130
    monkeypatch.setitem(cli_steps(), "boom", _Boom(RuntimeError("bug")))
    result = cli("boom")
    assert result.code == 4
    assert "internal error in llmops-ci" in result.err and "Traceback" in result.err
    assert "RuntimeError: bug" in result.err


def test_crash_exits_4_publishes_and_marks_the_summary(cli: Cli, project: Callable[..., Project],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    proj = project()
    assert cli("lint").code == 0
    monkeypatch.setitem(cli_steps(), "boom", _Boom(ZeroDivisionError("division by zero")))
    result = cli("boom")
    assert result.code == 4
    summary = json.loads((proj.root / ".llmops" / "summary.json").read_text())
    assert summary["internal_error"] == {"boom": {"error": "ZeroDivisionError: division by zero"}}
    assert "lint" in summary  # what was known before the crash is kept
    assert (proj.root / ".llmops" / "comment.md").is_file()  # and still published
    monkeypatch.setitem(cli_steps(), "boom", _Boom(None))
    assert cli("boom").code == 0  # the same step running through clears its mark
    assert "internal_error" not in json.loads((proj.root / ".llmops" / "summary.json").read_text())


def cli_steps() -> dict[str, object]:
    return cli.STEPS  # type: ignore[return-value]


def test_whole_process_lint_imports_none_of_the_heavy_libraries(project: Callable[..., Project]) -> None:
    proj = project()
    code = ("import sys\nfrom llmops_ci.cli import main\nrc = main(['lint'])\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('promptflow', 'azure', 'mlflow', 'pandas', "
            "'agent_framework'))\n"
            "print('HEAVY', heavy)\nsys.exit(rc)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=proj.root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_python_dash_m(project: Callable[..., Project]) -> None:
    proj = project()
    out = subprocess.run([sys.executable, "-m", "llmops_ci", "lint", "--format", "json"], cwd=proj.root,
                         capture_output=True, text=True)
    assert out.returncode == 0 and json.loads(out.stdout) == {"findings": []}
    assert Path(proj.root / ".llmops" / "summary.json").is_file()


def test_test_step_refuses_an_input_the_flow_does_not_have(cli: Cli, project: Callable[..., Project],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    proj = project()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-" + "k" * 24)
    result = cli("test", "--flow", "classify", "--input", "txt=hello")
    assert result.code == 2
    assert "--input txt: flow 'classify' has no input 'txt'; did you mean 'text'?; its inputs are: text, history" \
        in result.err
    assert not proj.path(".llmops/pf-home").exists()  # stopped before any executor started


def test_every_option_of_every_step_is_a_settings_field() -> None:
    """A step reads its options from the Settings value cli.py builds; an option without a field would be lost."""
    import argparse
    import dataclasses

    from llmops_ci.steps.settings import Settings

    names = {f.name for f in dataclasses.fields(Settings)}
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = {(step, action.dest) for step, parser in sub.choices.items() for action in parser._actions
               if action.dest not in names and action.dest != "help"}
    assert not missing
    settings = cli.settings_of(cli.build_parser().parse_args(["--flow", "a", "lint", "x", "--flow", "b"]))
    assert settings == Settings(step="lint", flow=("b",), paths=(Path("x"),))


@pytest.mark.parametrize("where", ["file", "under a file", "a dangling link"])
def test_a_state_dir_that_cannot_be_one_stops_before_the_step(cli: Cli, project: Callable[..., Project],
                                                               tmp_path: Path, where: str) -> None:
    """A file or a dangling link where the state dir should be: exit 2 naming it, not an internal error (exit 4)
    at the step's first write."""
    project()
    (tmp_path / "notes.txt").write_text("mine\n", encoding="utf-8")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere" / "x")
    state = {"file": "notes.txt", "under a file": "notes.txt/state", "a dangling link": "gone"}[where]
    before = sorted(p.name for p in tmp_path.iterdir())
    for step in ("pr", "batch-run", "gate"):
        result = cli(step, "--state-dir", state)
        assert result.code == 2, result.err
        assert f"--state-dir {state}: " in result.err and "Traceback" not in result.err
    assert "is a file" in result.err or "link to nothing" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing made, nothing lost
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine\n"


@pytest.mark.parametrize("option", ["--state-dir", "--config"])
def test_an_empty_path_is_refused_not_read_as_the_current_folder(cli: Cli, project: Callable[..., Project],
                                                                 tmp_path: Path, option: str) -> None:
    project()
    before = sorted(p.name for p in tmp_path.iterdir())
    for value in (f"{option}=", f"{option}= "):
        result = cli("pr", value)
        assert result.code == 2
        assert f"argument {option}: is empty" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
