"""Fixtures the LLM proxy's tests share: the endpoint behind the proxy, and a proxy server of their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmops_ci.llm.cache import ProxyServer
from tests.fakes.openai import FakeOpenAI


@pytest.fixture
def upstream(fake_openai: FakeOpenAI) -> FakeOpenAI:
    """The endpoint the proxy forwards to: tests/conftest.py's fake OpenAI server."""
    return fake_openai


@pytest.fixture
def server() -> Iterator[ProxyServer]:
    proxy = ProxyServer().start()
    yield proxy
    proxy.stop()
