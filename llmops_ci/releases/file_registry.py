"""The model registry without a service: ``<registry>/<model>/<version>/`` holds ``model.json`` and the flow as
registered (a private runnable copy), for every release target that serves on this machine."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmops_ci.core.errors import UsageError
from llmops_ci.releases.spec import ModelSpec
from llmops_ci.results.state import write_json_atomic


class FileRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root.absolute()

    def model_dir(self, name: str, version: str) -> Path:
        return self.root / name / version

    def has(self, spec: ModelSpec) -> bool:
        return (self.model_dir(spec.name, spec.version) / "model.json").is_file()

    def save(self, spec: ModelSpec, **fields: Any) -> None:
        """``model.json``: what every registered model carries, and the target's ``fields``."""
        record = {"name": spec.name, "version": spec.version, "flow": spec.flow, "description": spec.description,
                  **fields, "tags": spec.tags, "resources": [asdict(r) for r in spec.resources],
                  "registered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json_atomic(self.model_dir(spec.name, spec.version) / "model.json", record)

    def flow(self, spec: ModelSpec) -> Path:
        """The registered copy of the flow ``spec`` names; registering comes first."""
        flow = self.model_dir(spec.name, spec.version) / "flow"
        if not flow.is_dir():
            raise UsageError(f"{spec.name}:{spec.version} is not in the registry {self.root}; run "
                             f"'llmops-ci register --flow {spec.flow}' first")
        return flow

    def dry_run(self, spec: ModelSpec) -> str:
        record = {k: v for k, v in asdict(spec).items() if k not in ("path", "connections")}
        record["path"] = str(spec.path)
        return "# would register (local registry)\n" + json.dumps(record, indent=2, default=str) + "\n"
