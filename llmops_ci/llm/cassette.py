"""The cassette of a flow's LLM calls and what a run counts of them: the record/replay settings, the request key
(connection, path and canonical body), the JSON file (sorted by key, one entry per request, written atomically)
and the tokens each line used. The proxy that reads and writes it is ``llm.cache``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_ci.core import redaction
from llmops_ci.core.errors import UsageError
from llmops_ci.core.schema import as_dict
from llmops_ci.core.yamldoc import display_path

log = logging.getLogger("llmops_ci.llm_cache")

MODES = ("off", "record", "replay", "auto")
MAX_CASSETTE_BYTES = 500_000_000


@dataclass(frozen=True)
class CassetteProvenance:
    """The cassette's entries against the base branch's (built by cassette_diff)."""

    base: str                # the base commit
    changed: frozenset[str]  # keys added or altered since the base
    same: frozenset[str]     # keys as they are on the base
    base_only: bool = False  # replay only ``same``; the rest are misses


@dataclass(frozen=True)
class CacheSettings:
    mode: str
    cassette: Path
    provenance: CassetteProvenance | None = None
    repeats: int = 1  # the run's data holds each line this many times in a row (flow ``repeats:``)


@dataclass
class CacheStats:
    mode: str
    hits: int = 0
    misses: int = 0
    recorded: int = 0
    tokens_saved: int = 0
    recorded_in_change: int | None = None  # None: no base to compare with, so not known (never a false 0)

    def to_json(self) -> dict[str, Any]:
        out = {"mode": self.mode, "hits": self.hits, "misses": self.misses, "recorded": self.recorded,
               "tokens_saved": self.tokens_saved}
        if self.recorded_in_change is not None:
            out["recorded_in_change"] = self.recorded_in_change
        return out


def request_key(upstream: str, path: str, body: Any) -> str:
    canonical = json.dumps({"upstream": upstream, "path": path, "body": body}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


@dataclass
class Cassette:
    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirty: bool = False

    @classmethod
    def load(cls, path: Path) -> Cassette:
        """The recordings in ``path`` (none when it does not exist yet); UsageError naming the file when it is
        not a cassette. A single broken entry is dropped with a warning: that call misses and is recorded again."""
        cassette = cls(path)
        shown = display_path(path)
        if path.parent.exists() and not path.parent.is_dir():
            raise UsageError(f"{display_path(path.parent)}: llm_cache.dir is a file; point llm_cache.dir at a folder "
                             "(cassettes are written there, one per flow)")
        if not path.exists():
            return cassette
        if not path.is_file():
            raise UsageError(f"{shown}: a cassette must be a regular file; remove what is there and record again")
        if path.stat().st_size > MAX_CASSETTE_BYTES:
            raise UsageError(f"{shown}: over {MAX_CASSETTE_BYTES:,} bytes, too large for a cassette; delete it and "
                             "record again")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{shown}: cannot read the cassette ({exc}); delete it and record again") from None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            hint = ("it has merge-conflict markers (<<<<<<<): keep one side of each conflict, or delete the file "
                    "and record again with --llm-cache record" if "\n<<<<<<< " in f"\n{text}" else
                    "delete it and record again with --llm-cache record")
            raise UsageError(f"{shown}: not a readable cassette ({exc}); {hint}") from None
        if not isinstance(data, dict) or not isinstance(data.get("entries", []), list):
            raise UsageError(f"{shown}: not a cassette (an object with a list of 'entries'); delete it and record "
                             "again with --llm-cache record")
        for i, entry in enumerate(data.get("entries", []), 1):
            problem = _entry_problem(entry)
            if problem:
                log.warning("%s: entry %d ignored (%s); that call will be recorded again", shown, i, problem)
                cassette.dirty = True  # the next save drops it
                continue
            cassette.entries[entry["key"]] = entry
        return cassette

    def put(self, entry: dict[str, Any]) -> None:
        self.entries[entry["key"]] = entry
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        ordered = sorted(self.entries.values(), key=lambda e: (e["upstream"], e["path"], e["key"]))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # an answer can echo what the request carried (its Authorization header, a key in a URL)
        data = redaction.redact_data({"version": 1, "entries": ordered})
        text = json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.dirty = False


def _entry_problem(entry: Any) -> str | None:
    """Why a recorded entry cannot be replayed, or None."""
    if not isinstance(entry, dict):
        return "not an object"
    for name in ("key", "upstream", "path"):
        if not isinstance(entry.get(name), str):
            return f"no '{name}'"
    response = entry.get("response")
    if not isinstance(response, dict):
        return "no 'response'"
    status = response.get("status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        return "its status is not an HTTP status code"
    if "stream" in response:
        if not isinstance(response["stream"], list) or not all(isinstance(c, str) for c in response["stream"]):
            return "its stream is not a list of text chunks"
    elif not isinstance(response.get("body"), dict):
        return "its body is not a JSON object (the endpoint answered something that is not JSON)"
    elif status == 200 and set(response["body"]) == {"error"}:
        return "it recorded an error as a success"
    return None


@dataclass
class LineUsage:
    prompt: int = 0
    completion: int = 0
    total: int = 0

    def add(self, usage: dict[str, Any]) -> None:
        self.prompt += _int(usage.get("prompt_tokens"))
        self.completion += _int(usage.get("completion_tokens"))
        self.total += _int(usage.get("total_tokens"))

    def to_json(self) -> dict[str, int]:
        return {"prompt": self.prompt, "completion": self.completion, "total": self.total}


def usage_of(response: dict[str, Any]) -> dict[str, Any]:
    if "body" in response:
        return as_dict(as_dict(response["body"]).get("usage"))
    usage: dict[str, Any] = {}
    for chunk in response.get("stream", []):
        try:
            usage = as_dict(as_dict(json.loads(chunk)).get("usage")) or usage
        except (ValueError, RecursionError):
            continue
    return usage


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_total(response: dict[str, Any]) -> int:
    return _int(usage_of(response).get("total_tokens"))
