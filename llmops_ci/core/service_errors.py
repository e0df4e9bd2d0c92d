"""Outside-service failures (DNS, TLS, timeout, refused, cannot connect, server errors after retries), told
apart by exception type wherever it appears in a cause chain, never by message text: what makes exit 3.

Prompt flow records a line's exception chain in its error (``debugInfo``); the record/replay proxy sees the
upstream's own exception. Both are classified here, the same way.
"""

from __future__ import annotations

import re
from typing import Any

# OSError numbers (the "[Errno N]" an OSError's str() starts with, which is all that httpx's ConnectError keeps
# of the socket error): name resolution failures and refused/unreachable connections
_DNS_ERRNOS = {-2, -3, -5, 11001, 11002, 11004}
_REFUSED_ERRNOS = {111, 113, 101, 61, 10061}
_ERRNO = re.compile(r"^\[Errno (-?\d+)\]")
# Outside-service failures by exception type, wherever in the cause chain they appear and whichever client
# (openai, httpx, requests/urllib3, aiohttp, the standard library) raised them: exit 3 when every line has one.
SERVICE_FAILURES: dict[str, tuple[str, ...]] = {
    "DNS": ("gaierror", "NameResolutionError", "ClientConnectorDNSError",
            *(f"errno:{n}" for n in sorted(_DNS_ERRNOS))),
    "TLS": ("SSLError", "SSLCertVerificationError", "ClientSSLError", "ClientConnectorCertificateError"),
    "timeout": ("TimeoutError", "timeout", "APITimeoutError", "Timeout", "ReadTimeout", "ConnectTimeout",
                "ReadTimeoutError", "ConnectTimeoutError", "ServerTimeoutError", "TimeoutException"),
    "connection refused": ("ConnectionRefusedError", *(f"errno:{n}" for n in sorted(_REFUSED_ERRNOS))),
    "cannot connect": ("ConnectionResetError", "ConnectionAbortedError", "NewConnectionError", "ConnectError",
                       "APIConnectionError", "ClientConnectorError", "RemoteDisconnected", "ServerDisconnectedError",
                       "RemoteProtocolError"),
    "server error after retries": ("InternalServerError", "ServiceUnavailableError", "BadGatewayError",
                                   "ServiceUnavailable", "RateLimitError"),
}
_FAILURE_OF = {name: label for label, names in SERVICE_FAILURES.items() for name in names}
_CLASS_ORDER = list(SERVICE_FAILURES)


def exception_types(error: dict[str, Any]) -> list[str]:
    """The exception type names a prompt flow line error records: debugInfo's chain of inner exceptions, the
    tool's own exception (additionalInfo) and the error codes; an OSError number in the chain as "errno:N"."""
    names: list[str] = []
    debug = error.get("debugInfo")
    while isinstance(debug, dict):
        if isinstance(debug.get("type"), str):
            names.append(debug["type"])
        m = _ERRNO.match(str(debug.get("message") or ""))
        if m:
            names.append(f"errno:{int(m.group(1))}")
        debug = debug.get("innerException")
    for item in error.get("additionalInfo") or []:
        info = item.get("info") if isinstance(item, dict) else None
        if isinstance(info, dict) and isinstance(info.get("type"), str):
            names.append(info["type"])
    inner = error.get("innerError")
    while isinstance(inner, dict):
        if isinstance(inner.get("code"), str):
            names.append(inner["code"])
        inner = inner.get("innerError")
    return names


def service_failure(error: dict[str, Any]) -> str | None:
    """Which outside-service failure a line error is ("DNS", "TLS", "timeout", ...), or None for anything else."""
    found = {_FAILURE_OF[n.rsplit(".", 1)[-1]] for n in exception_types(error) if n.rsplit(".", 1)[-1] in _FAILURE_OF}
    # the most specific class wins: a refused connection is often wrapped as an APIConnectionError
    return next((label for label in _CLASS_ORDER if label in found), None)


def classify_exception(exc: BaseException) -> str | None:
    """The class of an exception raised calling a service, from its whole cause chain (requests wraps urllib3,
    which wraps the socket error), or None."""
    names: list[str] = []
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo and len(seen) < 50:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        names.append(type(item).__name__)
        if isinstance(item, OSError) and isinstance(item.errno, int):
            names.append(f"errno:{item.errno}")
        todo += [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]
    found = {_FAILURE_OF[n] for n in names if n in _FAILURE_OF}
    return next((label for label in _CLASS_ORDER if label in found), None)


def exception_chain(exc: BaseException) -> dict[str, Any]:
    """An exception and its causes in the shape of a prompt flow line error (``debugInfo``), for ``service_failure``."""
    top: dict[str, Any] = {}
    node, seen = top, set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        node["innerException"] = {"type": type(current).__name__, "message": str(current)}
        node = node["innerException"]
        current = current.__cause__ or current.__context__
    return {"debugInfo": top.get("innerException")}
