"""HTTP for the platform APIs: ``requests`` with bounded retries on 5xx, 429 and rate-limit 403s."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmops_ci import __version__

if TYPE_CHECKING:  # requests costs ~80 ms to import; lint and local runs never make an API call
    import requests

log = logging.getLogger("llmops_ci.http")
RETRY_STATUS = frozenset({500, 502, 503, 504, 429})


class HttpFailure(Exception):
    """A request that failed for good: after retries, or with a status retrying cannot fix."""

    def __init__(self, message: str, response: requests.Response | None = None) -> None:
        super().__init__(message)
        self.response = response

    @property
    def status(self) -> int | None:
        return self.response.status_code if self.response is not None else None

    @property
    def text(self) -> str:
        return self.response.text[:500] if self.response is not None else ""


def new_session() -> requests.Session:
    import requests

    session = requests.Session()
    session.headers["User-Agent"] = f"llmops-ci/{__version__}"
    return session


def _rate_limited(response: requests.Response) -> bool:
    if response.status_code == 429:
        return True
    if response.status_code != 403:
        return False
    return response.headers.get("x-ratelimit-remaining") == "0" or "rate limit" in response.text.lower()


@dataclass
class Http:
    session: requests.Session | None = None  # created on the first request
    attempts: int = 4
    max_wait: float = 60.0
    timeout: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    waits: list[float] = field(default_factory=list)
    monotonic: Callable[[], float] = time.monotonic
    deadline: float | None = None  # monotonic time after which no request starts or waits (see ``budget``)

    @contextlib.contextmanager
    def budget(self, seconds: float) -> Iterator[None]:
        """Bound the total time of every request in the block, retries and waits included (one publish must not
        cost minutes when an API hangs)."""
        outer = self.deadline
        end = self.monotonic() + seconds
        self.deadline = end if outer is None else min(outer, end)
        try:
            yield
        finally:
            self.deadline = outer

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.monotonic()

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        """The parsed JSON body of a successful request; HttpFailure when the body is not JSON (a proxy's HTML page,
        a truncated answer)."""
        response = self.request(method, url, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except (ValueError, RecursionError):
            raise HttpFailure(f"{method} {url}: HTTP {response.status_code} but the body is not JSON "
                              f"({response.headers.get('Content-Type') or 'no content type'}): "
                              f"{response.text[:200]!r}", response) from None

    def _wait_for(self, response: requests.Response | None, attempt: int) -> float:
        if response is not None:
            retry_after = response.headers.get("Retry-After")
            if retry_after and retry_after.strip().isdigit():
                return float(retry_after)
            reset = response.headers.get("x-ratelimit-reset")
            if reset and reset.isdigit() and response.headers.get("x-ratelimit-remaining") == "0":
                return max(0.0, float(reset) - self.clock()) + 1
        return float(2 ** attempt)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """The response of a request that succeeded (2xx); HttpFailure otherwise."""
        import requests

        if self.session is None:
            self.session = new_session()
        response: requests.Response | None = None
        for attempt in range(self.attempts):
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                raise HttpFailure(f"{method} {url}: not sent, the time allowed for publishing is spent", response)
            timeout = self.timeout if remaining is None else max(0.1, min(self.timeout, remaining))
            try:
                response = self.session.request(method, url, timeout=timeout, **kwargs)
            except requests.RequestException as exc:
                response = None
                problem = f"{type(exc).__name__}"
            else:
                if response.ok:
                    return response
                if response.status_code not in RETRY_STATUS and not _rate_limited(response):
                    raise HttpFailure(f"{method} {url}: HTTP {response.status_code}", response)
                problem = f"HTTP {response.status_code}"
            if attempt == self.attempts - 1:
                break
            wait = self._wait_for(response, attempt)
            if wait > self.max_wait:
                raise HttpFailure(f"{method} {url}: {problem}; the server asks to wait {wait:.0f} s, more than "
                                  f"{self.max_wait:.0f} s", response)
            remaining = self._remaining()
            if remaining is not None and wait >= remaining:
                raise HttpFailure(f"{method} {url}: {problem}; no time left to retry within the time allowed for "
                                  "publishing", response)
            log.debug("%s %s: %s, retrying in %.1f s", method, url, problem, wait)
            self.waits.append(wait)
            self.sleep(wait)
        raise HttpFailure(f"{method} {url}: still failing after {self.attempts} attempts", response)
