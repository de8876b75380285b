"""The hot route past FastAPI's machinery: `GET /v1/users/{user_id}/recommendations`.

Responsibilities:
- `FastPath`, an ASGI middleware: a GET of the recommendations route whose user id matches
  the route's pattern and whose query holds only `k`, `priority` and `budget_ms`, each at
  most once and well formed, is answered by the `answer` callable the app gives it (the same
  function the FastAPI route calls, so both give the same body, headers and status);
- everything else goes to FastAPI unchanged: other routes and methods, unknown or repeated
  parameters, a request carrying a body (so `serving.body_limit` sees every body), values
  `answer` refuses (it returns None when the query does not validate), so every error keeps
  FastAPI's 422 and its reasons, and the OpenAPI schema keeps the route.

Why: in a py-spy profile of the serving worker at 80 requests/s (only threads holding the
GIL), FastAPI's routing, parameter resolution and its middleware stack were ~16% of the
event loop's samples, second only to reading the 500 candidates (ADR 0048); the event loop's
CPU per request is what bounds the worker's rate (BENCHMARKS.md, Serving). The path is
matched with one regular expression and the query with `parse_qsl`, so a valid request costs
a few microseconds here (ADR 0047).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from streamrec.serving.schemas import REQUEST_ID_MAX_LENGTH, USER_ID_MAX_LENGTH, USER_ID_PATTERN

PARAMS = frozenset({"k", "priority", "budget_ms"})
# The route's path with the user id's own pattern (serving.schemas), anchored at both ends.
ROUTE = re.compile(r"/v1/users/(" + USER_ID_PATTERN.strip("^$") + r")/recommendations")

# (user_id, query parameters, x-request-id, the principal `serving.auth.AuthGate` let in or
# None) -> the answer, or None: let FastAPI handle it.
Answer = Callable[[str, dict[str, str], str | None, Any], Awaitable[Response | None]]


class FastPath:
    def __init__(self, app: ASGIApp, answer: Answer) -> None:
        self.app = app
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            request = _parse(scope)
            if request is not None:
                response = await self.answer(*request, scope.get("auth"))
                if response is not None:
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _parse(scope: Scope) -> tuple[str, dict[str, str], str | None] | None:
    """(user id, parameters, request id) of a plain request for the route, else None."""
    match = ROUTE.fullmatch(scope["path"])
    if match is None:
        return None
    user_id = match.group(1)  # the server has percent-decoded the path already
    if len(user_id) > USER_ID_MAX_LENGTH:
        return None
    params: dict[str, str] = {}
    query = scope.get("query_string", b"")
    if query:
        try:
            pairs = parse_qsl(query.decode("latin-1"), strict_parsing=True)
        except ValueError:
            return None
        for name, value in pairs:
            if name not in PARAMS or name in params:
                return None
            params[name] = value
    request_id = None
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if request_id is not None or len(value) > REQUEST_ID_MAX_LENGTH:
                return None
            request_id = value.decode("latin-1")
        elif (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
            return None  # a body: FastAPI's stack applies the body limit to it
    return user_id, params, request_id
