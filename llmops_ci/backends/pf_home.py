"""A private prompt flow home per state dir: no telemetry, no trace service, a file keyring.

Prompt flow reads its home and ``pf.yaml`` at import time, so this only builds the environment
for the runner process; it never imports promptflow itself. See docs/promptflow-runtime.md.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmops_ci.schema import as_dict, as_list

PF_YAML = {
    "telemetry": {"enabled": False},
    "trace": {"destination": "none"},
    "cli": {"installation_id": "00000000-0000-0000-0000-000000000000"},
}
# Variables of the caller's environment that would send traces or calls somewhere else.
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
        env = {k: v for k, v in base.items() if k not in _DROP}
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

    def copy_flow(self, flow: Path, name: str, overrides: dict[str, dict[str, Any]] | None = None) -> Path:
        """A private copy of ``flow`` with its additional_includes merged in, as prompt flow's snapshot does.

        Prompt flow writes into the folder it runs (process logs, .promptflow/, bytecode) and changes
        into it; running a copy keeps the user's folder untouched. ``overrides`` applies per-node
        connection settings to the copy (``pf.test`` has no such parameter).
        """
        return copy_flow(flow, self.root / "work" / name, overrides)


def copy_flow(flow: Path, dest: Path, overrides: dict[str, dict[str, Any]] | None = None,
              variant: str | None = None) -> Path:
    """``flow`` copied to ``dest`` with additional_includes merged in and connection overrides applied;
    ``variant`` (``${node.variant_id}``) becomes that node's default, for a copy that is served."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(flow, dest, ignore=shutil.ignore_patterns("__pycache__", ".promptflow", ".runs"))
    dag_path = dest / "flow.dag.yaml"
    if not dag_path.exists():
        return dest
    dag = as_dict(yaml.safe_load(dag_path.read_text(encoding="utf-8")))
    includes = as_list(dag.pop("additional_includes", None))
    for inc in includes:
        src = (flow / inc).resolve()
        target = dest / src.name
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", ".promptflow"))
        elif src.is_file():
            shutil.copy2(src, target)
    if overrides:
        _apply_overrides(dag, overrides)
    node, _, variant_id = (variant or "").strip("${}").partition(".")
    chosen = as_dict(as_dict(dag.get("node_variants")).get(node))
    if variant_id and variant_id in as_dict(chosen.get("variants")):
        chosen["default_variant_id"] = variant_id
    if includes or overrides or variant_id:
        dag_path.write_text(yaml.safe_dump(dag, sort_keys=False), encoding="utf-8")
    return dest


def _apply_overrides(dag: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> None:
    bodies = [n for n in as_list(dag.get("nodes")) if isinstance(n, dict)]
    for name, spec in as_dict(dag.get("node_variants")).items():
        for variant in as_dict(as_dict(spec).get("variants")).values():
            node = as_dict(variant).get("node")
            if isinstance(node, dict):
                bodies.append({**node, "name": name, "_ref": node})
    for body in bodies:
        values = overrides.get(str(body.get("name")))
        if not values:
            continue
        target = body.pop("_ref", body)
        for key, value in values.items():
            if key == "connection" and target.get("type") == "llm":
                target["connection"] = value
            else:
                target.setdefault("inputs", {})[key] = value
