"""docs/configuration.md documents every key of every block of llmops.yaml and run.yml (#27).

The schema is walked from the specs lint and every step check a config with (config.py's CONFIG and RUN_YML),
so a key added there and not to the reference fails here, naming the block and the key to add.
"""

from __future__ import annotations

import re
from pathlib import Path

from llmops_ci.config import schema as config
from llmops_ci.core.schema import ListOf, MapOf, OneOf, Spec, Struct

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"


def blocks(spec: Spec, path: str, out: dict[str, list[str]], seen: dict[int, str]) -> dict[str, list[str]]:
    """``{block path: its keys}``; a map's entries are ``<name>``, a list's items ``[]``. A block used in several
    places (a probe, a resource list) is documented once, where it is first met."""
    if isinstance(spec, Struct):
        if id(spec) in seen:
            return out
        seen[id(spec)] = path
        out.setdefault(path, [])
        for key, sub in spec.fields.items():
            out[path].append(key)
            blocks(sub, f"{path}.{key}" if path else key, out, seen)
    elif isinstance(spec, config._ConnectionSpec):  # its keys depend on its type: all of them, once
        out[path] = ["type", *sorted({f for fields in config.CONNECTION_FIELDS.values() for f in fields})]
    elif isinstance(spec, MapOf):
        blocks(spec.value, f"{path}.<name>", out, seen)
    elif isinstance(spec, ListOf):
        blocks(spec.item, f"{path}[]", out, seen)
    elif isinstance(spec, OneOf):
        for option in spec.options:
            blocks(option, path, out, seen)
    return out


def schema() -> dict[str, list[str]]:
    out = {(p or "llmops.yaml"): keys for p, keys in blocks(config.CONFIG, "", {}, {}).items()}
    run_yml = blocks(config.RUN_YML, "", {}, {})
    out.update({(f"run.yml:{p}" if p else "run.yml"): keys for p, keys in run_yml.items()})
    return out


def documented() -> dict[str, set[str]]:
    """``{block path: keys with a row}`` from the reference: a heading ``### `path` `` then rows ``| `key` |``."""
    out: dict[str, set[str]] = {}
    current: list[str] = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            current = re.findall(r"`([^`]+)`", line)
            for path in current:
                out.setdefault(path, set())
        elif line.startswith("| `") and current:
            key = re.match(r"\| `([^`]+)`", line)
            if key:
                for path in current:
                    out[path].add(key.group(1))
    return out


def test_every_key_of_the_schema_is_documented() -> None:
    doc = documented()
    missing = [f"{path}: {key}" for path, keys in schema().items() for key in keys if key not in doc.get(path, set())]
    assert not missing, ("docs/configuration.md does not document these keys (add a row '| `key` | type | default | "
                         "example | what it does |' under the heading '### `block`'):\n  " + "\n  ".join(missing))


def test_the_reference_documents_no_key_the_schema_lacks() -> None:
    known = schema()
    extra = [f"{path}: {key}" for path, keys in documented().items() if path in known
             for key in sorted(keys - set(known[path]))]
    assert not extra, "docs/configuration.md documents keys llmops.yaml does not have:\n  " + "\n  ".join(extra)


def test_the_walk_sees_nested_blocks() -> None:
    # the walk itself: a test that could not fail would be worse than none
    found = schema()
    assert "flows.<name>.deploy.probes.liveness" in found and "timeout" in found["flows.<name>.deploy.probes.liveness"]
    assert "flows.<name>.evaluations.<name>" in found and "scores" in found["flows.<name>.evaluations.<name>"]
    assert found["run.yml:identity"] == ["type", "client_id"] and "api_version" in found["connections.<name>"]
