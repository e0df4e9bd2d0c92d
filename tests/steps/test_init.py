"""``llmops-ci init``: a config for the flows below a folder that lint accepts; it never overwrites."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.helpers.projects import CliResult

Cli = Callable[..., CliResult]
DATA = Path(__file__).parents[1] / "kinds" / "data"


def _upstream(root: Path) -> None:
    """Upstream prompt flow examples of three kinds, laid out as a user's repo would hold them."""
    for name in ("basic", "chat-basic", "eval-chat-math"):
        shutil.copytree(DATA / "upstream" / name, root / "flows" / name)
    shutil.copytree(DATA / "flex-flows" / "basic", root / "flows" / "flex-basic")
    shutil.copytree(DATA / "prompty" / "basic", root / "prompts" / "basic")


def test_init_writes_a_config_lint_accepts_for_every_kind(cli: Cli, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _upstream(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = cli("init")
    assert result.code == 0, result.err
    config = yaml.safe_load((tmp_path / "llmops.yaml").read_text())
    flows = config["flows"]
    for path in ("flows/basic", "flows/flex-basic", "prompts/basic"):  # a DAG, a flex flow, a prompty file
        assert any(f["path"] == path for f in flows.values()), flows
    # the evaluation flow is not a flow of its own when a single flow could own it; here several flows exist,
    # so it is listed in a comment naming its path
    assert "flows/eval-chat-math" in (tmp_path / "llmops.yaml").read_text()
    basic = next(f for f in flows.values() if f["path"] == "flows/basic")
    assert basic["data"] == "flows/basic/data.jsonl"  # the data file beside the flow, whose columns fit
    assert basic["gate"] == {"run.lines_failed": {"max": 0}}
    # every connection a node names is declared, secrets from the environment only
    for conn in config.get("connections", {}).values():
        assert all(not isinstance(v, str) or "${env:" in v or k in ("type", "api_version") for k, v in conn.items())
    lint = cli("lint")
    assert lint.code == 0, lint.out + lint.err
    assert f"({len(flows)} flow" in lint.out or "flows checked" in lint.out


def test_init_maps_an_evaluation_to_the_one_flow_and_data(cli: Cli, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).parents[2] / "examples" / "web-classification"
    shutil.copytree(example / "flows", tmp_path / "flows")
    shutil.copytree(example / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert cli("init").code == 0
    text = (tmp_path / "llmops.yaml").read_text()
    flow = yaml.safe_load(text)["flows"]["classify"]
    assert flow["data"] == "data/classify.jsonl"
    assert flow["column_mapping"] == {"url": "${data.url}", "text": "${data.text}"}
    assert flow["evaluations"]["eval-accuracy"]["column_mapping"] == {"groundtruth": "${data.label}"}
    # an input left on its default is said, with the outputs it could be mapped to
    assert "on their defaults until mapped: prediction (the flow's outputs: category, evidence)" in text
    assert cli("lint").code == 0


def test_init_writes_sample_data_when_none_fits(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(DATA / "upstream" / "basic", tmp_path / "flows" / "hello")
    (tmp_path / "flows" / "hello" / "data.jsonl").unlink()
    monkeypatch.chdir(tmp_path)
    result = cli("init")
    assert result.code == 0, result.err
    flow = yaml.safe_load((tmp_path / "llmops.yaml").read_text())["flows"]["hello"]
    assert flow["data"] == "data/hello.jsonl"
    assert (tmp_path / "data" / "hello.jsonl").read_text() == '{"text": ""}\n'
    assert cli("lint").code == 0


def test_init_never_overwrites(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(DATA / "upstream" / "basic", tmp_path / "flows" / "hello")
    (tmp_path / "llmops.yaml").write_text("mine\n")
    monkeypatch.chdir(tmp_path)
    result = cli("init")
    assert result.code == 2
    assert "already exists" in result.err and "never overwrites" in result.err
    assert (tmp_path / "llmops.yaml").read_text() == "mine\n"
    assert not (tmp_path / ".llmops").exists()
    other = cli("init", "--config", "other.yaml")
    assert other.code == 0 and (tmp_path / "other.yaml").is_file()


def test_init_without_flows_is_exit_2(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("init")
    assert result.code == 2 and "no flows found" in result.err
    assert not (tmp_path / "llmops.yaml").exists()
    assert cli("init", "missing").code == 2


def test_common_options_before_or_after_the_step(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(DATA / "upstream" / "basic", tmp_path / "flows" / "hello")
    monkeypatch.chdir(tmp_path)
    assert cli("init").code == 0
    (tmp_path / "llmops.yaml").rename(tmp_path / "conf.yaml")
    before = cli("--config", "conf.yaml", "--state-dir", "st", "lint")
    after = cli("lint", "--config", "conf.yaml", "--state-dir", "st2")
    assert before.code == after.code == 0
    assert (tmp_path / "st" / "summary.json").is_file() and (tmp_path / "st2" / "summary.json").is_file()
    # after the step wins over before it
    both = cli("--state-dir", "st3", "lint", "--config", "conf.yaml", "--state-dir", "st4")
    assert both.code == 0 and (tmp_path / "st4").is_dir() and not (tmp_path / "st3").exists()


@pytest.mark.parametrize(("argv", "hint"), [
    (("lnt",), "did you mean 'lint'?"),
    (("lint", "--confg", "x.yaml"), "did you mean '--config'?"),
    (("--confg", "x.yaml", "lint"), "did you mean '--config'?"),
    (("batch-run", "--wokers", "2"), "did you mean '--workers'?"),
])
def test_typos_get_a_suggestion(argv: tuple[str, ...], hint: str, cli: Cli) -> None:
    result = cli(*argv)
    assert result.code == 2
    assert hint in result.err
