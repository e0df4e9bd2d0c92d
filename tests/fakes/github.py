"""A GitHub REST API (issue comments subset) server on 127.0.0.1 for tests (stdlib only).

``FakeGitHub`` behaves like api.github.com (or GitHub Enterprise Server with ``prefix="/api/v3"``) for
what a PR-comment client needs: ``GET /user``, listing issue comments with GitHub's ``Link`` pagination,
creating and editing comments. It checks the token (``Authorization: Bearer|token <token>``, else 401),
sends rate-limit headers, emulates a fork PR's read-only ``GITHUB_TOKEN`` (``write_forbidden``) and
GitHub Actions' 403 on ``GET /user``, and can fail the next requests on demand (``fail_next``). Hostile modes:
``stall`` (seconds every answer is held back: a hanging API) and ``link_loop`` (a comment list whose
``Link: rel="next"`` points back at the page itself).

The module also holds the plumbing shared with ``tests.fakes.ado``: ``Recorded`` (one logged request),
``Reply`` and ``FakeService`` (threaded server, request log, ``fail_next``).
"""

from __future__ import annotations

import copy
import json
import math
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

GITHUB_BODY_LIMIT = 65536
DOCS = "https://docs.github.com/rest"


@dataclass
class Recorded:
    """One request as the fake received it. ``headers`` keys are lower-cased; ``query`` keeps the last value of a
    repeated key; ``body`` is the parsed JSON, the raw text if it was not JSON, or None when empty."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    """A response to send: ``body`` is JSON-encoded (dict/list), sent as text/html (str) or empty (None)."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Failure:
    status: int
    times: int
    headers: dict[str, str]
    body: Any
    method: str | None


class FakeService:
    """Server plumbing shared by the fakes; subclasses are dataclasses that define ``_route``."""

    requests: list[Recorded]
    _server: ThreadingHTTPServer | None
    _lock: threading.Lock
    _failures: list[_Failure]
    json_content_type = "application/json; charset=utf-8"
    stall: float = 0.0  # seconds to hold back every answer (a hanging API); set on the instance

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` (the server must be started)."""
        assert self._server is not None, "call start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                fake._handle(self)

            def do_POST(self) -> None:
                fake._handle(self)

            def do_PATCH(self) -> None:
                fake._handle(self)

            def do_PUT(self) -> None:
                fake._handle(self)

            def do_DELETE(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, status: int, times: int = 1, headers: dict[str, str] | None = None,
                  body: dict[str, Any] | str | None = None, method: str | None = None) -> None:
        """Answer the next ``times`` requests (only those of ``method`` if given) with ``status`` instead of serving
        them (before auth is checked). ``headers`` override the usual ones (e.g. ``Retry-After``,
        ``x-ratelimit-remaining``); ``body`` defaults to a status-appropriate JSON error; a str body is sent as HTML."""
        with self._lock:
            self._failures.append(_Failure(status, times, dict(headers or {}),
                                           self._failure_body(status) if body is None else body,
                                           method.upper() if method else None))

    # -- to override -------------------------------------------------------------------------------------------

    def _route(self, rec: Recorded) -> Reply:
        raise NotImplementedError

    def _failure_body(self, status: int) -> Any:
        return {"message": HTTPStatus(status).phrase}

    def _response_headers(self, reply: Reply) -> dict[str, str]:
        return {}

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _take_failure(self, method: str) -> Reply | None:
        for failure in self._failures:
            if failure.method in (None, method):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return Reply(failure.status, copy.deepcopy(failure.body), dict(failure.headers))
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length > 0 else b""
        body: Any = None
        if raw:
            text = raw.decode("utf-8", errors="replace")
            try:
                body = json.loads(text)
            except ValueError:
                body = text
        parts = urlsplit(handler.path)
        rec = Recorded(method=handler.command, path=unquote(parts.path),
                       query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                       headers={k.lower(): v for k, v in handler.headers.items()}, body=body)
        with self._lock:
            self.requests.append(rec)
            reply = self._take_failure(rec.method)
            if reply is None:
                try:
                    reply = self._route(rec)
                except Exception as exc:  # a bug in the fake: answer 500 rather than drop the connection
                    reply = Reply(500, {"message": f"fake server error: {exc!r}"})
            headers = {**self._response_headers(reply), **reply.headers}
        if self.stall:
            time.sleep(self.stall)
        if reply.body is None:
            data = b""
        elif isinstance(reply.body, str):
            data = reply.body.encode()
            headers.setdefault("Content-Type", "text/html; charset=utf-8")
        else:
            data = json.dumps(reply.body).encode()
            headers.setdefault("Content-Type", self.json_content_type)
        try:
            handler.send_response(reply.status)
            for name, value in headers.items():
                if name.lower() not in ("content-length", "content-type"):
                    handler.send_header(name, value)
            content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
            if content_type:
                handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (``stall``)
            handler.close_connection = True


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _positive_int(value: str | None, default: int) -> int:
    try:
        number = int(value) if value is not None else default
    except ValueError:
        return default
    return number if number >= 1 else default


_COMMENTS = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues/(?P<number>\d+)/comments/?$")
_COMMENT = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues/comments/(?P<id>\d+)/?$")


@dataclass
class FakeGitHub(FakeService):
    token: str = "ghs_testtoken"
    login: str = "github-actions[bot]"
    user_endpoint_forbidden: bool = True
    prefix: str = ""
    owner: str = "octo"
    repo: str = "app"
    write_forbidden: bool = False
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    rate_limit: int = 5000
    link_loop: bool = False
    _next_id: int = field(default=1000, init=False, repr=False)
    _remaining: int = field(default=5000, init=False, repr=False)
    _reset: int = field(default=0, init=False, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _failures: list[_Failure] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.prefix = self.prefix.rstrip("/")
        self._remaining = self.rate_limit
        self._reset = int(time.time()) + 3600

    @property
    def url(self) -> str:
        """What ``GITHUB_API_URL`` would be: ``http://127.0.0.1:PORT`` + prefix."""
        return self.origin + self.prefix

    # -- helpers -----------------------------------------------------------------------------------------------

    def add_comment(self, number: int, body: str, login: str) -> dict[str, Any]:
        """Pre-populate a comment on issue/PR ``number`` by ``login``; returns it as the API would."""
        with self._lock:
            return self._render(number, self._new_comment(number, body, login))

    def bodies(self, number: int) -> list[str]:
        return [c["body"] for c in self.comments.get(number, [])]

    # -- internals ---------------------------------------------------------------------------------------------

    @staticmethod
    def _user(login: str) -> dict[str, Any]:
        bot = login.endswith("[bot]")
        user_id = 41898282 if login == "github-actions[bot]" else zlib.crc32(login.encode()) % 10**8
        return {"login": login, "id": user_id, "type": "Bot" if bot else "User", "site_admin": False}

    def _new_comment(self, number: int, body: str, login: str) -> dict[str, Any]:
        comment_id, self._next_id = self._next_id, self._next_id + 1
        now = _now_iso()
        comment = {"url": "", "html_url": "", "issue_url": "", "id": comment_id, "node_id": f"IC_kwDOfake{comment_id}",
                   "user": self._user(login), "created_at": now, "updated_at": now,
                   "author_association": "NONE" if login.endswith("[bot]") else "MEMBER", "body": body}
        self.comments.setdefault(number, []).append(comment)
        return comment

    def _render(self, number: int, comment: dict[str, Any]) -> dict[str, Any]:
        """Fill in the URLs (they need the server's port) and return a copy safe to hand out."""
        api = f"{self.url}/repos/{self.owner}/{self.repo}" if self._server is not None else ""
        comment["url"] = f"{api}/issues/comments/{comment['id']}"
        comment["issue_url"] = f"{api}/issues/{number}"
        comment["html_url"] = f"https://github.com/{self.owner}/{self.repo}/pull/{number}#issuecomment-{comment['id']}"
        return copy.deepcopy(comment)

    def _find(self, comment_id: int) -> tuple[int, dict[str, Any] | None]:
        for number, thread in self.comments.items():
            for comment in thread:
                if comment["id"] == comment_id:
                    return number, comment
        return 0, None

    def _response_headers(self, reply: Reply) -> dict[str, str]:
        return {"x-ratelimit-limit": str(self.rate_limit), "x-ratelimit-remaining": str(max(self._remaining, 0)),
                "x-ratelimit-reset": str(self._reset), "x-ratelimit-used": str(self.rate_limit - self._remaining),
                "x-ratelimit-resource": "core", "x-github-media-type": "github.v3; format=json",
                "x-github-request-id": f"FAKE:{len(self.requests):06d}"}

    def _failure_body(self, status: int) -> Any:
        if status == 403:
            return {"message": "API rate limit exceeded for installation ID 1.",
                    "documentation_url": f"{DOCS}/overview/rate-limits-for-the-rest-api", "status": "403"}
        if status == 429:
            return {"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
                               "again.", "documentation_url": f"{DOCS}/overview/rate-limits-for-the-rest-api",
                    "status": "429"}
        return {"message": HTTPStatus(status).phrase, "status": str(status)}

    @staticmethod
    def _error(status: int, message: str, doc: str = DOCS, **extra: Any) -> Reply:
        return Reply(status, {"message": message, **extra, "documentation_url": doc, "status": str(status)})

    def _authorized(self, header: str) -> bool:
        scheme, _, credential = header.strip().partition(" ")
        return scheme.lower() in ("bearer", "token") and credential.strip() == self.token

    def _body_error(self, body: Any) -> Reply | None:
        doc = f"{DOCS}/issues/comments"
        if not isinstance(body, dict):
            return self._error(400, "Problems parsing JSON", doc)
        if "body" not in body:
            return self._error(422, 'Invalid request.\n\n"body" wasn\'t supplied.', doc)
        if not isinstance(body["body"], str):
            return self._error(422, f"Invalid request.\n\nFor 'properties/body', {json.dumps(body['body'])} is not "
                                    "a string.", doc)
        if len(body["body"]) > GITHUB_BODY_LIMIT:
            return self._error(422, "Validation Failed", doc, errors=[
                {"resource": "IssueComment", "code": "custom", "field": "body",
                 "message": f"body is too long (maximum is {GITHUB_BODY_LIMIT} characters)"}])
        if not body["body"].strip():
            return self._error(422, "Validation Failed", doc, errors=[
                {"resource": "IssueComment", "code": "custom", "field": "body", "message": "body cannot be blank"}])
        return None

    def _link_header(self, rec: Recorded, page: int, last: int) -> str | None:
        query = {k: v for k, v in rec.query.items() if k != "page"}
        base = self.origin + rec.path

        def link(target: int, rel: str) -> str:
            return f'<{base}?{urlencode([*query.items(), ("page", str(target))])}>; rel="{rel}"'

        links = []
        if page > 1:
            links.append(link(page - 1, "prev"))
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links.append(link(1, "first"))
        return ", ".join(links) or None

    def _route(self, rec: Recorded) -> Reply:
        if not self._authorized(rec.headers.get("authorization", "")):
            return self._error(401, "Bad credentials")
        self._remaining -= 1
        if self.prefix and not rec.path.startswith(self.prefix + "/"):
            return self._error(404, "Not Found")
        path = rec.path[len(self.prefix):]
        if path.rstrip("/") == "/user" and rec.method == "GET":
            if self.user_endpoint_forbidden:
                return self._error(403, "Resource not accessible by integration",
                                   f"{DOCS}/users/users#get-the-authenticated-user")
            return Reply(200, {**self._user(self.login), "id": 1, "type": "Bot"})
        match = _COMMENTS.match(path) or _COMMENT.match(path)
        if match is None or (match["owner"].lower(), match["repo"].lower()) != (self.owner.lower(), self.repo.lower()):
            return self._error(404, "Not Found")
        if match.re is _COMMENTS:
            number = int(match["number"])
            if rec.method == "GET":
                per_page = min(_positive_int(rec.query.get("per_page"), 30), 100)
                page = _positive_int(rec.query.get("page"), 1)
                items = self.comments.get(number, [])
                last = max(1, math.ceil(len(items) / per_page))
                chunk = [self._render(number, c) for c in items[(page - 1) * per_page:page * per_page]]
                link = self._link_header(rec, page, last)
                if self.link_loop:
                    link = f'<{self.origin}{rec.path}?{urlencode(rec.query)}>; rel="next"'
                return Reply(200, chunk, {"Link": link} if link else {})
            if rec.method == "POST":
                if self.write_forbidden:
                    return self._error(403, "Resource not accessible by integration",
                                       f"{DOCS}/issues/comments#create-an-issue-comment")
                error = self._body_error(rec.body)
                if error is not None:
                    return error
                comment = self._render(number, self._new_comment(number, rec.body["body"], self.login))
                return Reply(201, comment, {"Location": comment["url"]})
            return self._error(404, "Not Found")
        number, comment_or_none = self._find(int(match["id"]))
        if rec.method == "GET":
            if comment_or_none is None:
                return self._error(404, "Not Found")
            return Reply(200, self._render(number, comment_or_none))
        if rec.method != "PATCH":
            return self._error(404, "Not Found")
        if self.write_forbidden:
            return self._error(403, "Resource not accessible by integration",
                               f"{DOCS}/issues/comments#update-an-issue-comment")
        if comment_or_none is None:
            return self._error(404, "Not Found", f"{DOCS}/issues/comments#update-an-issue-comment")
        if comment_or_none["user"]["login"] != self.login:
            return self._error(403, "Must have admin rights to Repository.",
                               f"{DOCS}/issues/comments#update-an-issue-comment")
        error = self._body_error(rec.body)
        if error is not None:
            return error
        comment_or_none["body"] = rec.body["body"]
        comment_or_none["updated_at"] = _now_iso()
        return Reply(200, self._render(number, comment_or_none))
