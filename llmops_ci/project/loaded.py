"""The loaded project: ``llmops.yaml`` plus each flow's ``FlowInfo``, inspected once per process.

Lint, runs, ``--changed-since`` and release all ask the same ``Project`` value, so a step parses
the config once and inspects each flow (and reads each data file) at most once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_ci.config import DEFAULT_CONFIG, ENV_REF, Config, not_a_config, read_config
from llmops_ci.core import redaction, safe_copy
from llmops_ci.core.errors import ConfigError, UsageError
from llmops_ci.kinds import declared_kinds, kind_for
from llmops_ci.kinds.base import FlowInfo, FlowKind
from llmops_ci.project.data import DataInfo, read_data


@dataclass
class Project:
    config: Config
    _infos: dict[Path, FlowInfo | None] = field(default_factory=dict, repr=False)
    _data: dict[Path, DataInfo] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        safe_copy.set_project_root(self.config.root)  # links in what is copied may lead anywhere inside it

    def kind(self, path: Path) -> FlowKind | None:
        return kind_for(path)

    def info(self, path: Path) -> FlowInfo | None:
        """The flow at ``path`` (a flow's or an evaluation's), inspected the first time it is asked for. A flow
        declared by its config entry (an ``mlflow_agent:`` block) is inspected from that entry."""
        key = path.absolute()
        if key not in self._infos:
            declared = next(((block, spec) for f in self.config.flows.values() if f.path.absolute() == key
                             for block, spec in f.blocks.items()), None)
            kinds = declared_kinds()
            info = kinds[declared[0]].inspect_declared(key, declared[1]) if declared and declared[0] in kinds \
                else None
            if info is None:
                kind = kind_for(key)
                info = kind.inspect(key) if kind is not None else None
            self._infos[key] = info
        return self._infos[key]

    def data(self, path: Path) -> DataInfo:
        key = path.absolute()
        if key not in self._data:
            self._data[key] = read_data(path)
        return self._data[key]


def secret_env_names(config: Config) -> set[str]:
    """Environment variables the config reads into a secret: a connection's api_key or secrets, or any key
    named like a credential (an environment variable ``MY_API_KEY: ${env:X}``), in llmops.yaml and run.yml.
    A literal written there (lint's secret-literal error) becomes a secret of this process too, so it is
    never repeated in an output."""
    names: set[str] = set()

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, secret or key == "secrets" or redaction.is_secret_name(str(key)))
        elif isinstance(value, list):
            for item in value:
                walk(item, secret)
        elif isinstance(value, str) and secret:
            names.update(ENV_REF.findall(value))
            if "${" not in value:
                redaction.add(value)

    for doc in (config.doc, *config.run_docs):
        walk(doc.data, False)
    return names


def load_project(config: Path | None) -> Project:
    """llmops.yaml for a step that runs flows: every problem is exit 2; ``${env:...}`` is resolved per run."""
    path = config or Path(DEFAULT_CONFIG)
    if not path.is_file():
        raise UsageError(f"{path}: {not_a_config(path)}; pass --config PATH")
    loaded, problems = read_config(path, environ=None)
    if problems or loaded is None:
        raise ConfigError(problems)
    return Project(loaded)
