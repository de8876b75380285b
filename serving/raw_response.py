"""A JSON answer sent straight through ASGI, for middlewares that refuse a request before the
app runs (the body limit's 413, the front door's 503)."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from starlette.types import Send


async def send_json(
    send: Send, status: int, payload: object, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = orjson.dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
