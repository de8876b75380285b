"""The 422 body of a request that does not validate, safe to write for any input.

FastAPI's own handler echoes each error's `input`; a JSON body may hold NaN or Infinity
(Python's json reads them, and `1e400` as infinity), which Starlette refuses to write, so a
bad body became a 500 and a traceback in the log. Here every error keeps its type, location,
message and context, and its input is made JSON-safe: non-finite floats become the strings
the client wrote ("NaN", "Infinity", "-Infinity"), and containers are cut at a small depth
and length (the client has its own input; the echo only points at it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response

MAX_DEPTH = 4
MAX_ITEMS = 20
MAX_CHARS = 200
CUT = "..."


def json_safe(value: Any, depth: int = 0) -> Any:
    """`value` as plain JSON types, bounded, with non-finite floats spelled as strings."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int):
        # An int of thousands of digits is valid JSON: echo its size, not its digits.
        return value if value.bit_length() <= 63 else f"an integer of {len(str(value))} digits"
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if depth >= MAX_DEPTH:
        return CUT
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {_text(str(k)): json_safe(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            out[CUT] = f"{len(items) - MAX_ITEMS} more"
        return out
    if isinstance(value, Sequence | set | frozenset) and not isinstance(value, bytes | bytearray):
        seq = list(value)
        out_list = [json_safe(v, depth + 1) for v in seq[:MAX_ITEMS]]
        return [*out_list, CUT] if len(seq) > MAX_ITEMS else out_list
    if isinstance(value, bytes | bytearray):
        return json_safe(bytes(value).decode("utf-8", "replace"), depth)
    return json_safe(str(value), depth)  # an exception in `ctx`, a Decimal, ...


def _text(value: str) -> str:
    # A JSON string may hold a lone surrogate (\ud800), which no UTF-8 writer takes.
    cut = value[:MAX_CHARS] + CUT if len(value) > MAX_CHARS else value
    return cut.encode("utf-8", "replace").decode("utf-8")


def problems(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic's errors (type, loc, msg, input, ctx) as JSON-safe dicts; the docs URL dropped."""
    return [
        {key: json_safe(value) for key, value in dict(error).items() if key != "url"}
        for error in errors[:MAX_ITEMS]
    ]


async def invalid_request(request: Request, exc: Exception) -> Response:
    """422 with the reasons, for FastAPI's validation errors and for a pydantic model a route
    builds from the request (the same rules, so the same answer)."""
    assert isinstance(exc, RequestValidationError | ValidationError)
    body = orjson.dumps({"detail": problems(exc.errors())})
    return Response(body, status_code=422, media_type="application/json")
