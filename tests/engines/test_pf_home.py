from __future__ import annotations

from pathlib import Path

import yaml

from llmops_ci.engines.promptflow.home import PFHome


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
