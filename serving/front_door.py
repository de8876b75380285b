"""The front door: refuse recommendation requests before they cost anything when overloaded.

Responsibilities:
- `FrontDoor`, an outermost ASGI middleware for `/v1/` requests: a request is answered 503
  with `Retry-After` and the "overloaded, do not retry" marker, without entering FastAPI, when
  - the event loop's lag (`serving.loop_lag`: what a request that has just arrived already
    waited inside uvicorn before any handler saw it) is past its class's share of the budget
    (interactive: the share a request may queue, `max_queue_share` x budget; prefetch half of
    it; background a quarter), or
  - admission would refuse it at once anyway (`AdmissionController.refusal`: its waiting room
    is full, or a higher class waits).

Why: admission (`serving.admission`) bounds the requests it sees, but when the process is
short of CPU, requests wait in uvicorn's socket buffers and parser queue, where no deadline
sees them: past saturation the clients timed out at 5 s instead of getting 503s (BENCHMARKS.md,
Serving). A refusal here costs ~0.1 ms against ~2 ms for an answer, so the worker keeps its
capacity for the requests it admits. The idea is toobusy-js's (load shedding on event-loop
lag); no maintained ASGI package does it, and it is a few lines.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from streamrec.serving.admission import PRIORITIES, AdmissionController
from streamrec.serving.auth import principal_of
from streamrec.serving.loop_lag import LoopLag
from streamrec.serving.raw_response import send_json

# The share of the interactive threshold at which each class is refused: lower classes first.
CLASS_SHARE = {"interactive": 1.0, "prefetch": 0.5, "background": 0.25}


class FrontDoor:
    def __init__(
        self,
        app: ASGIApp,
        lag: LoopLag,
        admission: Callable[[], AdmissionController | None],
        max_lag_s: float,
        retry_after_s: int = 1,
        on_refuse: Callable[[str, str], None] | None = None,
    ) -> None:
        self.app = app
        self.lag = lag
        self.admission = admission
        self.max_lag_s = max_lag_s
        self.retry_after_s = retry_after_s
        self.on_refuse = on_refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            priority = _priority(scope)
            refusal = self._refusal(priority)
            if refusal is not None:
                kind, detail = refusal
                if self.on_refuse is not None:
                    self.on_refuse(priority, kind)
                await self._refuse(send, priority, detail)
                return
        await self.app(scope, receive, send)

    def _refusal(self, priority: str) -> tuple[str, str] | None:
        """(a reason kind for the metrics, the detail for the client), or None: let it in."""
        lag = self.lag.now()
        if lag > self.max_lag_s * CLASS_SHARE[priority]:
            return "event loop behind", f"event loop {lag * 1000:.0f} ms behind"
        admission = self.admission()
        reason = admission.refusal(priority) if admission is not None else None
        return (reason, reason) if reason is not None else None

    async def _refuse(self, send: Send, priority: str, reason: str) -> None:
        await send_json(
            send,
            503,
            {"detail": f"overloaded, do not retry ({priority}: {reason})", "retry": False},
            [
                (b"retry-after", str(self.retry_after_s).encode()),
                (b"x-overloaded", b"do-not-retry"),
            ],
        )


def _priority(scope: Scope) -> str:
    """The `priority` query parameter (the POST form's body is not read here: interactive),
    at most the class of the principal `serving.auth.AuthGate` let in."""
    asked = "interactive"
    query = scope.get("query_string", b"")
    if b"priority=" in query:
        value = parse_qs(query.decode("latin-1")).get("priority", [""])[0]
        if value in PRIORITIES:
            asked = value
    principal = principal_of(scope)
    return principal.priority_for(asked) if principal is not None else asked
