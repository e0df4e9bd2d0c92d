"""An Azure DevOps Services REST 7.1 server (pull request threads subset) on 127.0.0.1 for tests (stdlib only).

``FakeAzureDevOps`` serves, under ``/{organization}/{project}/_apis/git/repositories/{repository}/pullRequests/{pr}``
(project and repository by id or name, the project segment optional as on dev.azure.com):

- ``GET threads``, ``GET threads/{id}``, ``GET threads/{id}/comments[/{commentId}]``
- ``POST threads`` (create), ``POST threads/{id}/comments`` (reply)
- ``PATCH threads/{id}`` (status/properties), ``PATCH threads/{id}/comments/{commentId}`` (content)
- ``GET /{organization}/_apis/connectionData`` (who the token is): ``authenticatedUser.id`` is the id thread comments
  carry as ``author.id``. The resource is preview-only, as on the service (an api-version without ``-preview`` is
  400 ``VssInvalidPreviewVersionException``); the answer has the ``ConnectionData`` fields of the Location area
  (``authenticatedUser``, ``authorizedUser``, ``instanceId``, ``deploymentId``, ``deploymentType``,
  ``locationServiceData``). Source: the azure-devops Python SDK, ``azure/devops/v7_1/location/location_client.py``,
  ``LocationClient.get_connection_data`` ("[Preview API]", resource 00d9565f-ed9c-4a06-9a50-00e7896ccab4, version
  ``7.1-preview.1``, deserialised as ``ConnectionData`` whose ``authenticatedUser`` is an ``Identity``).

Like the real service it requires ``Authorization: Bearer <token>`` (a PAT as Basic ``:token`` also works), an
``api-version`` (query or ``Accept`` header; 7.1 / 7.1-preview[.1]), answers errors in the VSS envelope
(``$id``/``message``/``typeKey``...), returns thread properties typed (``{"$type", "$value"}``), thread status as
names, omits ``status`` on threads created without one, and adds
``Microsoft.TeamFoundation.Discussion.SupportsMarkdown`` to created threads. ``write_forbidden`` emulates a build
identity without 'Contribute to pull requests' (TF401027).
"""

from __future__ import annotations

import base64
import copy
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any

from tests.fakes.github import FakeService, Recorded, Reply, _Failure

ADO_CONTENT_LIMIT = 150000
API_VERSIONS = ("7.1", "7.1-preview", "7.1-preview.1")
THREAD_STATUSES = ("unknown", "active", "fixed", "wontFix", "closed", "byDesign", "pending")
COMMENT_TYPES = ("unknown", "text", "codeChange", "system")
SUPPORTS_MARKDOWN = "Microsoft.TeamFoundation.Discussion.SupportsMarkdown"

_CONNECTION_DATA = re.compile(r"^/(?P<org>[^/]+)/_apis/connectionData/?$", re.IGNORECASE)
_ROUTE = re.compile(
    r"^/(?P<org>[^/]+)/(?:(?P<project>[^/]+)/)?_apis/git/repositories/(?P<repo>[^/]+)/pullRequests/(?P<pr>\d+)"
    r"/threads(?:/(?P<thread>\d+)(?:/(?P<comments>comments)(?:/(?P<comment>\d+))?)?)?/?$", re.IGNORECASE)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def typed_property(value: Any) -> dict[str, Any]:
    """ADO's PropertiesCollection form of a value: ``{"$type": "System.String", "$value": ...}``."""
    if isinstance(value, dict) and "$value" in value:
        return {"$type": value.get("$type") or typed_property(value["$value"])["$type"], "$value": value["$value"]}
    if isinstance(value, bool):
        return {"$type": "System.Boolean", "$value": value}
    if isinstance(value, int):
        return {"$type": "System.Int32" if -(2**31) <= value < 2**31 else "System.Int64", "$value": value}
    if isinstance(value, float):
        return {"$type": "System.Double", "$value": value}
    return {"$type": "System.String", "$value": value if isinstance(value, str) else str(value)}


def _enum(value: Any, names: tuple[str, ...]) -> str | None:
    """An ADO enum given as its int or (case-insensitive) name -> canonical name; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return names[value] if 0 <= value < len(names) else None
    if isinstance(value, str):
        if value.isdigit():
            return _enum(int(value), names)
        return next((n for n in names if n.lower() == value.lower()), None)
    return None


@dataclass
class FakeAzureDevOps(FakeService):
    token: str = "ado-system-access-token"
    organization: str = "contoso"
    project_id: str = "6ce954b1-ce1f-45d1-b94d-e6bf2464ba2c"
    repository_id: str = "3411ebc1-d5aa-464f-9615-0b527bc66719"
    identity_id: str = "build-service-id"
    write_forbidden: bool = False
    threads: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    project_name: str = "Contoso"
    repository_name: str = "app"
    identity_name: str = ""
    _next_thread_id: int = field(default=100, init=False, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _failures: list[_Failure] = field(default_factory=list, init=False, repr=False)
    json_content_type = "application/json; charset=utf-8; api-version=7.1"

    def __post_init__(self) -> None:
        self.identity_name = self.identity_name or f"{self.project_name} Build Service ({self.organization})"

    @property
    def url(self) -> str:
        """What ``SYSTEM_COLLECTIONURI`` would be: ``http://127.0.0.1:PORT/{organization}/``."""
        return f"{self.origin}/{self.organization}/"

    # -- helpers -----------------------------------------------------------------------------------------------

    def add_thread(self, pr: int, content: str, properties: dict[str, Any] | None = None,
                   status: str | int | None = "active", author_id: str | None = None,
                   author_name: str | None = None, comment_type: str = "text") -> dict[str, Any]:
        """Pre-populate a thread (default author: a human, not the token's identity); ``status=None`` makes a
        thread without a status like ADO's system threads. Returns the thread as the API would."""
        status_name = _enum(status, THREAD_STATUSES) if status is not None else None
        if status is not None and status_name is None:
            raise ValueError(f"unknown thread status {status!r}")
        with self._lock:
            author = self._author(author_id or "human-reviewer-id", author_name or "Pat Reviewer")
            thread = self._new_thread(pr, [{"content": content, "commentType": comment_type}], author, status_name,
                                      {k: typed_property(v) for k, v in (properties or {}).items()})
            return self._render(pr, thread)

    def contents(self, pr: int) -> list[str]:
        """The first comment's content of each thread on ``pr``, in creation order."""
        return [t["comments"][0]["content"] for t in self.threads.get(pr, []) if t["comments"]]

    # -- internals ---------------------------------------------------------------------------------------------

    def _author(self, identity_id: str, name: str) -> dict[str, Any]:
        return {"displayName": name, "url": f"https://spsprodweu5.vssps.visualstudio.com/_apis/Identities/{identity_id}",
                "_links": {"avatar": {"href": f"https://dev.azure.com/{self.organization}/_apis/GraphProfile/"
                                              f"MemberAvatars/{identity_id}"}},
                "id": identity_id, "uniqueName": f"Build\\{identity_id}" if identity_id == self.identity_id
                else f"{identity_id}@example.com", "imageUrl": "", "descriptor": f"svc.{identity_id}"}

    @staticmethod
    def _comment(comment_id: int, parent: int, content: str, comment_type: str,
                 author: dict[str, Any]) -> dict[str, Any]:
        now = _now_iso()
        return {"id": comment_id, "parentCommentId": parent, "author": author, "content": content,
                "publishedDate": now, "lastUpdatedDate": now, "lastContentUpdatedDate": now,
                "commentType": comment_type, "usersLiked": []}

    def _new_thread(self, pr: int, comments: list[dict[str, Any]], author: dict[str, Any], status: str | None,
                    properties: dict[str, Any]) -> dict[str, Any]:
        thread_id, self._next_thread_id = self._next_thread_id, self._next_thread_id + 1
        now = _now_iso()
        thread: dict[str, Any] = {
            "pullRequestThreadContext": None, "id": thread_id, "publishedDate": now, "lastUpdatedDate": now,
            "comments": [self._comment(i, int(c.get("parentCommentId") or 0), c["content"],
                                       _enum(c.get("commentType", "text"), COMMENT_TYPES) or "text", author)
                         for i, c in enumerate(comments, start=1)],
            "threadContext": None, "properties": properties, "identities": None, "isDeleted": False}
        if status is not None:
            thread["status"] = status
        self.threads.setdefault(pr, []).append(thread)
        return thread

    def _base(self, pr: int) -> str:
        origin = self.origin if self._server is not None else ""
        return (f"{origin}/{self.organization}/{self.project_id}/_apis/git/repositories/{self.repository_id}"
                f"/pullRequests/{pr}")

    def _render(self, pr: int, thread: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(thread)
        href = f"{self._base(pr)}/threads/{thread['id']}"
        out["_links"] = {"self": {"href": href},
                         "repository": {"href": f"{self._base(pr).rsplit('/pullRequests/', 1)[0]}"}}
        for comment in out["comments"]:
            comment["_links"] = self._comment_links(pr, thread["id"], comment["id"])
        return out

    def _comment_links(self, pr: int, thread_id: int, comment_id: int) -> dict[str, Any]:
        href = f"{self._base(pr)}/threads/{thread_id}"
        return {"self": {"href": f"{href}/comments/{comment_id}"}, "threads": {"href": href}}

    def _render_comment(self, pr: int, thread_id: int, comment: dict[str, Any]) -> dict[str, Any]:
        return {**copy.deepcopy(comment), "_links": self._comment_links(pr, thread_id, comment["id"])}

    def _response_headers(self, reply: Reply) -> dict[str, str]:
        return {"x-tfs-processid": "00000000-0000-0000-0000-000000000000", "x-vss-e2eid": f"fake-{len(self.requests)}",
                "ActivityId": f"fake-activity-{len(self.requests)}"}

    @staticmethod
    def _error(status: int, message: str, type_key: str, type_name: str | None = None) -> Reply:
        name = type_name or f"Microsoft.VisualStudio.Services.WebApi.{type_key}, Microsoft.VisualStudio.Services.WebApi"
        return Reply(status, {"$id": "1", "innerException": None, "message": message, "typeName": name,
                              "typeKey": type_key, "errorCode": 0, "eventId": 3000})

    def _failure_body(self, status: int) -> Any:
        if status == 429:
            return self._error(429, "TF400733: The request has been canceled: Request was blocked due to exceeding "
                                    "usage of resource 'Concurrency' in namespace 'User'.",
                               "RequestBlockedException").body
        return self._error(status, f"{HTTPStatus(status).phrase} (fake)", "VssServiceException").body

    def _forbidden(self) -> Reply:
        return self._error(
            403, "TF401027: You need the Git 'PullRequestContribute' permission to perform this action. Details: "
                 f"identity 'Build\\{self.project_id}', scope 'repository'.", "GitNeedsPermissionException",
            "Microsoft.TeamFoundation.Git.Server.GitNeedsPermissionException, Microsoft.TeamFoundation.Git.Server")

    def _authorized(self, header: str) -> bool:
        scheme, _, credential = header.strip().partition(" ")
        if scheme.lower() == "bearer":
            return credential.strip() == self.token
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credential.strip()).decode()
            except ValueError:
                return False
            return decoded.partition(":")[2] == self.token
        return False

    def _api_version(self, rec: Recorded) -> str | None:
        if "api-version" in rec.query:
            return rec.query["api-version"]
        for part in rec.headers.get("accept", "").replace(",", ";").split(";"):
            key, _, value = part.strip().partition("=")
            if key.lower() == "api-version":
                return value.strip()
        return None

    def _content_error(self, content: Any) -> Reply | None:
        if not isinstance(content, str):
            return self._error(400, "The comment content must be a string.", "ArgumentException",
                               "System.ArgumentException, mscorlib")
        if len(content) > ADO_CONTENT_LIMIT:
            return self._error(400, "The comment content is too long", "ArgumentException",
                               "System.ArgumentException, mscorlib")
        return None

    def _find_thread(self, pr: int, thread_id: int) -> dict[str, Any] | None:
        return next((t for t in self.threads.get(pr, []) if t["id"] == thread_id), None)

    def _route(self, rec: Recorded) -> Reply:
        if not self._authorized(rec.headers.get("authorization", "")):
            reply = self._error(401, "TF400813: Resource not available for anonymous access. Client authentication "
                                     "required.", "UnauthorizedRequestException",
                                "Microsoft.TeamFoundation.Framework.Server.UnauthorizedRequestException, "
                                "Microsoft.TeamFoundation.Framework.Server")
            reply.headers["WWW-Authenticate"] = "Bearer authorization_uri=https://login.microsoftonline.com/common"
            return reply
        data = _CONNECTION_DATA.match(rec.path)
        if data is not None and data["org"].lower() == self.organization.lower():
            return self._connection_data(rec)
        match = _ROUTE.match(rec.path)
        if match is None or match["org"].lower() != self.organization.lower():
            return self._error(404, f"The controller for path '{rec.path}' was not found or does not implement "
                                    "IController.", "HttpException", "System.Web.HttpException, System.Web")
        version = self._api_version(rec)
        if version is None:
            return self._error(400, f'No api-version was supplied for the "{rec.method}" request. The version must be '
                                    'supplied either as part of the Accept header (e.g. "application/json; '
                                    "api-version=1.0\") or as a query parameter (e.g. '?api-version=1.0').",
                               "VssVersionNotSpecifiedException")
        if version not in API_VERSIONS:
            return self._error(400, f"The requested REST API version of {version} is out of range for this server. "
                                    "The latest REST API version this server supports is 7.1 (this fake accepts "
                                    f"{', '.join(API_VERSIONS)}).", "VssVersionOutOfRangeException")
        project = match["project"]
        if project is not None and project.lower() not in (self.project_id.lower(), self.project_name.lower()):
            return self._error(404, f"TF200016: The following project does not exist: {project}. Verify that the name "
                                    "of the project is correct and that the project exists on the specified Azure "
                                    "DevOps Server.", "ProjectDoesNotExistWithNameException")
        if match["repo"].lower() not in (self.repository_id.lower(), self.repository_name.lower()):
            return self._error(404, f"TF401019: The Git repository with name or identifier {match['repo']} does not "
                                    "exist or you do not have permissions for the operation you are attempting.",
                               "GitRepositoryNotFoundException",
                               "Microsoft.TeamFoundation.Git.Server.GitRepositoryNotFoundException, "
                               "Microsoft.TeamFoundation.Git.Server")
        if rec.method in ("POST", "PATCH", "PUT"):
            if not rec.headers.get("content-type", "").lower().startswith("application/json"):
                return self._error(415, "The request entity's media type is not supported; send application/json.",
                                   "UnsupportedMediaTypeException")
            if not isinstance(rec.body, dict):
                return self._error(400, "The request body could not be parsed as a JSON object.",
                                   "InvalidArgumentValueException")
            if self.write_forbidden:
                return self._forbidden()
        pr = int(match["pr"])
        if match["thread"] is None:
            if rec.method == "GET":
                threads = [self._render(pr, t) for t in self.threads.get(pr, [])]
                return Reply(200, {"value": threads, "count": len(threads)})
            if rec.method == "POST":
                return self._create_thread(pr, rec.body)
            return self._method_not_allowed(rec.method)
        thread = self._find_thread(pr, int(match["thread"]))
        if thread is None:
            return self._error(404, f"The pull request thread with id {match['thread']} was not found.",
                               "GitPullRequestThreadNotFoundException")
        if match["comments"] is None:
            if rec.method == "GET":
                return Reply(200, self._render(pr, thread))
            if rec.method == "PATCH":
                return self._update_thread(pr, thread, rec.body)
            return self._method_not_allowed(rec.method)
        if match["comment"] is None:
            if rec.method == "GET":
                comments = [self._render_comment(pr, thread["id"], c) for c in thread["comments"]]
                return Reply(200, {"value": comments, "count": len(comments)})
            if rec.method == "POST":
                return self._add_comment(pr, thread, rec.body)
            return self._method_not_allowed(rec.method)
        comment = next((c for c in thread["comments"] if c["id"] == int(match["comment"])), None)
        if comment is None:
            return self._error(404, f"The comment with id {match['comment']} was not found in thread "
                                    f"{thread['id']}.", "GitPullRequestCommentNotFoundException")
        if rec.method == "GET":
            return Reply(200, self._render_comment(pr, thread["id"], comment))
        if rec.method != "PATCH":
            return self._method_not_allowed(rec.method)
        if comment["author"]["id"] != self.identity_id:
            return self._error(403, "Only the author of a comment can edit it.",
                               "GitNeedsPermissionException",
                               "Microsoft.TeamFoundation.Git.Server.GitNeedsPermissionException, "
                               "Microsoft.TeamFoundation.Git.Server")
        error = self._content_error(rec.body.get("content"))
        if error is not None:
            return error
        now = _now_iso()
        comment.update(content=rec.body["content"], lastUpdatedDate=now, lastContentUpdatedDate=now)
        thread["lastUpdatedDate"] = now
        return Reply(200, self._render_comment(pr, thread["id"], comment))

    def _connection_data(self, rec: Recorded) -> Reply:
        if rec.method != "GET":
            return self._method_not_allowed(rec.method)
        version = self._api_version(rec) or ""
        if "-preview" not in version:
            return self._error(400, f'The requested version "{version or "(none)"}" of the resource is under preview. '
                                    "The -preview flag must be supplied in the api-version for such requests. For "
                                    f'example: "{version or "7.1"}-preview"', "VssInvalidPreviewVersionException")
        user = {"id": self.identity_id, "descriptor": f"Microsoft.TeamFoundation.ServiceIdentity;{self.identity_id}",
                "subjectDescriptor": f"svc.{self.identity_id}", "providerDisplayName": self.identity_name,
                "isActive": True, "members": [], "memberOf": [], "properties": {
                    "Account": {"$type": "System.String", "$value": f"Build\\{self.identity_id}"}},
                "resourceVersion": 2, "metaTypeId": 255}
        return Reply(200, {"authenticatedUser": user, "authorizedUser": dict(user),
                           "instanceId": "8f6a5a2e-0000-0000-0000-000000000001",
                           "deploymentId": "8f6a5a2e-0000-0000-0000-000000000002", "deploymentType": "hosted",
                           "locationServiceData": {"serviceOwner": "00025394-6065-48ca-87d9-7f5672854ef7",
                                                   "defaultAccessMappingMoniker": "PublicAccessMapping",
                                                   "lastChangeId": 1, "lastChangeId64": 1}})

    def _method_not_allowed(self, method: str) -> Reply:
        return self._error(405, f"The requested resource does not support http method '{method}'.",
                           "HttpException", "System.Web.HttpException, System.Web")

    def _status(self, body: dict[str, Any]) -> tuple[str | None, Reply | None]:
        if body.get("status") is None:
            return None, None
        status = _enum(body["status"], THREAD_STATUSES)
        if status is None:
            return None, self._error(400, f"The thread status '{body['status']}' is not valid.",
                                     "InvalidArgumentValueException")
        return status, None

    def _properties(self, body: dict[str, Any]) -> tuple[dict[str, Any], Reply | None]:
        properties = body.get("properties") or {}
        if not isinstance(properties, dict):
            return {}, self._error(400, "Thread properties must be a JSON object.", "InvalidArgumentValueException")
        return {k: typed_property(v) for k, v in properties.items()}, None

    def _create_thread(self, pr: int, body: dict[str, Any]) -> Reply:
        comments = body.get("comments") or []
        if not isinstance(comments, list) or not all(isinstance(c, dict) for c in comments):
            return self._error(400, "Thread comments must be a list of objects.", "InvalidArgumentValueException")
        for comment in comments:
            error = self._content_error(comment.get("content"))
            if error is not None:
                return error
            if _enum(comment.get("commentType", "text"), COMMENT_TYPES) is None:
                return self._error(400, f"The comment type '{comment.get('commentType')}' is not valid.",
                                   "InvalidArgumentValueException")
        status, error = self._status(body)
        properties, prop_error = self._properties(body)
        if error is not None or prop_error is not None:
            return error or prop_error or Reply(400)
        properties = {SUPPORTS_MARKDOWN: {"$type": "System.Int32", "$value": 1}, **properties}
        thread = self._new_thread(pr, comments, self._author(self.identity_id, self.identity_name), status, properties)
        return Reply(200, self._render(pr, thread))

    def _update_thread(self, pr: int, thread: dict[str, Any], body: dict[str, Any]) -> Reply:
        status, error = self._status(body)
        properties, prop_error = self._properties(body)
        if error is not None or prop_error is not None:
            return error or prop_error or Reply(400)
        if status is not None:
            thread["status"] = status
        thread["properties"] = {**(thread.get("properties") or {}), **properties}
        thread["lastUpdatedDate"] = _now_iso()
        return Reply(200, self._render(pr, thread))

    def _add_comment(self, pr: int, thread: dict[str, Any], body: dict[str, Any]) -> Reply:
        error = self._content_error(body.get("content"))
        if error is not None:
            return error
        comment_type = _enum(body.get("commentType", "text"), COMMENT_TYPES) or "text"
        comment = self._comment(max((c["id"] for c in thread["comments"]), default=0) + 1,
                                int(body.get("parentCommentId") or 0), body["content"], comment_type,
                                self._author(self.identity_id, self.identity_name))
        thread["comments"].append(comment)
        thread["lastUpdatedDate"] = comment["publishedDate"]
        return Reply(200, self._render_comment(pr, thread["id"], comment))
