"""An ASGI middleware that refuses request bodies over a size limit with 413.

Responsibilities: answer 413 before reading when Content-Length says the body is too big,
and stop reading (413) when a chunked body grows past the limit, so an oversized body never
reaches validation or the core. It holds for every method and path: a chunked body (which
a route that never reads its body, a GET, would not notice) is read here first, up to the
limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamrec.serving.raw_response import send_json


class BodyTooLarge(Exception):
    """The body passed the limit while it was being read."""


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunked = False
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send)
                return
            chunked = chunked or name == b"transfer-encoding"
        if chunked:
            # A chunked body on a route that never reads it (a GET) would pass unchecked:
            # read it here, up to the limit, and hand the app what was read.
            buffered = await self._buffered(receive)
            if buffered is None:
                await self._refuse(send)
                return
            receive = buffered
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _buffered(self, receive: Receive) -> Receive | None:
        """The whole body read now (None: over the limit), replayed to the app."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # a disconnect: the app sees it
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return None
            if not message.get("more_body", False):
                break
        pending = iter(messages)

        async def replay() -> Message:
            return next(pending, None) or await receive()

        return replay

    async def _refuse(self, send: Send) -> None:
        detail = f"request body over {self.max_bytes} bytes"
        await send_json(send, 413, {"detail": detail, "retry": False})
