from __future__ import annotations

from llmops_ci.core import log


def test_cache_line_is_said_only_for_runs_that_called_an_llm() -> None:
    from types import SimpleNamespace

    # an evaluation of plain Python calls no LLM: no line naming a cassette that is never written (#27)
    assert log.cache_line("auto", SimpleNamespace(hits=0, misses=0, recorded=0, tokens_saved=0), "c.json") is None
    # every engine's line says tokens saved, even when its stats carry none
    line = log.cache_line("replay", SimpleNamespace(hits=3, misses=0, recorded=0), "c.json")
    assert line == "LLM cache (replay): 3 hits, 0 misses, 0 recorded, 0 tokens saved -> c.json"
