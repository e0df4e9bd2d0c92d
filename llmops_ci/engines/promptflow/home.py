"""A private prompt flow home per state dir: no telemetry, no trace service, a file keyring.

Prompt flow reads its home and ``pf.yaml`` at import time, so this only builds the environment
for the runner process; it never imports promptflow itself. See docs/promptflow-runtime.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from llmops_ci import platforms  # noqa: F401  (registers the CI credential names child_environment drops)
from llmops_ci.core.child_env import child_environment

PF_YAML = {
    "telemetry": {"enabled": False},
    "trace": {"destination": "none"},
    "cli": {"installation_id": "00000000-0000-0000-0000-000000000000"},
}
# Variables of the caller's environment that would send traces or calls somewhere else (the CI system's own
# tokens go in child_environment, as for every engine)
_DROP = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "PF_HOME_DIRECTORY",
         "PF_CONNECTION_PROVIDER")


@dataclass(frozen=True)
class PFHome:
    root: Path

    @property
    def runs(self) -> Path:
        return self.root / ".runs"

    def prepare(self) -> PFHome:
        for sub in ("work", "results", "xdg-data", "xdg-config"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        pf_yaml = self.root / "pf.yaml"
        if not pf_yaml.exists():
            pf_yaml.write_text(yaml.safe_dump(PF_YAML), encoding="utf-8")
        return self

    def environment(self, base: Mapping[str, str], tmp: Path) -> dict[str, str]:
        """The runner's environment. ``tmp`` must be a short path: multiprocessing puts its Unix sockets
        there and a socket path may not exceed 107 bytes, which a state dir deep in a checkout can."""
        env = child_environment(base, drop=_DROP)
        env.update({
            "PF_HOME_DIRECTORY": str(self.root),
            "PF_TRACING_SKIP_LOCAL_SETUP": "true",
            "PF_DISABLE_TRACING": "false",  # tracing on in-process: the only way token usage is recorded
            "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
            "XDG_DATA_HOME": str(self.root / "xdg-data"),
            "XDG_CONFIG_HOME": str(self.root / "xdg-config"),
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
            "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
            "TMPDIR": str(tmp),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        })
        return env
