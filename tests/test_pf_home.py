from __future__ import annotations

from pathlib import Path

import yaml

from llmops_ci.backends.pf_home import PFHome


def test_environment_is_private_and_quiet(tmp_path: Path) -> None:
    home = PFHome(tmp_path / "home").prepare()
    env = home.environment({"PATH": "/bin", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "PF_HOME_DIRECTORY": "/y"},
                           Path("/tmp/t"))
    assert env["PF_HOME_DIRECTORY"] == str(tmp_path / "home")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env and env["PATH"] == "/bin"
    assert env["PF_DISABLE_TRACING"] == "false" and env["TMPDIR"] == "/tmp/t"
    assert env["XDG_DATA_HOME"].startswith(str(tmp_path))
    config = yaml.safe_load((tmp_path / "home" / "pf.yaml").read_text())
    assert config["telemetry"] == {"enabled": False} and config["trace"] == {"destination": "none"}


def test_copy_merges_includes_and_applies_overrides(tmp_path: Path) -> None:
    flow = tmp_path / "proj" / "flows" / "f"
    (tmp_path / "proj" / "shared" / "lib").mkdir(parents=True)
    (tmp_path / "proj" / "shared" / "lib" / "helper.py").write_text("X = 1\n")
    (tmp_path / "proj" / "shared" / "one.py").write_text("Y = 2\n")
    flow.mkdir(parents=True)
    (flow / "flow.dag.yaml").write_text(yaml.safe_dump({
        "additional_includes": ["../../shared/lib", "../../shared/one.py"],
        "nodes": [{"name": "a", "type": "llm", "connection": "c1", "inputs": {"deployment_name": "d"}},
                  {"name": "v", "use_variants": True}],
        "node_variants": {"v": {"default_variant_id": "x", "variants": {"x": {"node": {
            "type": "llm", "connection": "c1", "inputs": {}}}}}},
    }))
    (flow / "__pycache__").mkdir()
    copy = PFHome(tmp_path / "home").prepare().copy_flow(flow, "run1", {"a": {"connection": "c2", "model": "m"},
                                                                       "v": {"connection": "c3"}})
    assert (copy / "lib" / "helper.py").read_text() == "X = 1\n"
    assert (copy / "one.py").is_file() and not (copy / "__pycache__").exists()
    dag = yaml.safe_load((copy / "flow.dag.yaml").read_text())
    assert "additional_includes" not in dag
    assert dag["nodes"][0] == {"name": "a", "type": "llm", "connection": "c2",
                               "inputs": {"deployment_name": "d", "model": "m"}}
    assert dag["node_variants"]["v"]["variants"]["x"]["node"]["connection"] == "c3"
    assert yaml.safe_load((flow / "flow.dag.yaml").read_text())["nodes"][0]["connection"] == "c1"
