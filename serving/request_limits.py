"""An ASGI wrapper that refuses oversized request heads: 431 for headers, 414 for a query.

Responsibilities: sum the request's header names and values and measure its query string,
and answer before anything else reads them (authentication parses a header, validation the
query). The body has its own limit (`serving.body_limit`). uvicorn's httptools parser sets
no header limit of its own, so this is the one that holds.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from streamrec.serving.raw_response import send_json


class HeadLimit:
    def __init__(self, app: ASGIApp, max_header_bytes: int, max_query_bytes: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_query_bytes = max_query_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if len(scope.get("query_string", b"")) > self.max_query_bytes:
                detail = f"query string over {self.max_query_bytes} bytes"
                await send_json(send, 414, {"detail": detail, "retry": False})
                return
            size = sum(len(name) + len(value) for name, value in scope.get("headers", ()))
            if size > self.max_header_bytes:
                detail = f"request headers over {self.max_header_bytes} bytes"
                await send_json(send, 431, {"detail": detail, "retry": False})
                return
        await self.app(scope, receive, send)
