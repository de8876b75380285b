"""The HTTP API (FastAPI on uvicorn): recommendations, health, readiness, metrics.

Responsibilities:
- routes: `GET /v1/users/{user_id}/recommendations?k=20` and its POST form with a session
  context, `/healthz` (the process answers), `/readyz` (a ranker and the item snapshot are
  loaded), `/metrics` (Prometheus: this worker's registry and the shared `streamrec_*` one),
  and the OpenAPI schema FastAPI derives from the models in `serving.schemas`;
- the `lifespan` opens Redis, Feast and the model (`ServingWorker.start`) and, when asked,
  the request-topic server beside it; it closes them on shutdown;
- authentication outermost when `auth.mode` is on (`serving.auth.AuthGate`: `/v1/`, and
  `/metrics` unless `auth.metrics_open`, need an API key or a JWT; 401 / 403 / 429 +
  Retry-After before anything else runs; `/healthz`, `/readyz` and the schema stay open), the
  principal's scope capping the request's priority and named in its impression;
- errors in layers: then the front door (`serving.front_door`: 503 + Retry-After before
  FastAPI runs when the event loop is behind or admission would refuse), then the fast path
  (`serving.fast_path`: a well-formed GET of the recommendations route is answered by the
  route's own function without FastAPI's routing; anything else goes on), then the body
  limit (413, every method and path), validation (422 with the reasons, whatever the body
  held: `serving.validation`), `Overloaded` from admission -> 503 +
  Retry-After + "overloaded, do not retry", anything else -> 500;
- the recommendation body is written from the core's answer arrays with orjson
  (`serving.answer.Answer.http_json`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from streamrec.infra.settings import Settings
from streamrec.serving.answer import Answer
from streamrec.serving.auth import Authenticator, AuthGate, KeyRing, Principal, principal_of
from streamrec.serving.body_limit import BodyLimit
from streamrec.serving.errors import Overloaded
from streamrec.serving.fast_path import FastPath
from streamrec.serving.front_door import FrontDoor
from streamrec.serving.ids import new_id
from streamrec.serving.request_limits import HeadLimit
from streamrec.serving.schemas import (
    REQUEST_ID_MAX_LENGTH,
    USER_ID_MAX_LENGTH,
    USER_ID_PATTERN,
    Problem,
    Recommendations,
    RecQuery,
    SessionContext,
)
from streamrec.serving.validation import invalid_request
from streamrec.serving.worker import ServingWorker
from streamrec.topics.recs_requests import Priority

UserId = Annotated[
    str,
    Path(min_length=1, max_length=USER_ID_MAX_LENGTH, pattern=USER_ID_PATTERN, description="user"),
]
RequestId = Annotated[str | None, Header(max_length=REQUEST_ID_MAX_LENGTH)]
OVERLOADED = {503: {"model": Problem, "description": "overloaded, do not retry"}}
# With auth on (serving.auth.AuthGate): the refusals a client may get before the route runs.
REFUSED = {
    **OVERLOADED,
    401: {"model": Problem, "description": "no valid API key or token"},
    403: {"model": Problem, "description": "this credential may not ask for this user"},
    429: {"model": Problem, "description": "rate limited: retry after Retry-After seconds"},
    # Size limits (serving.body_limit, serving.request_limits) and a body that is not JSON.
    400: {"model": Problem, "description": "the body could not be parsed"},
    413: {"model": Problem, "description": "body over serving.max_body_bytes"},
    414: {"model": Problem, "description": "query string over serving.max_query_bytes"},
    431: {"model": Problem, "description": "headers over serving.max_header_bytes"},
}


def _digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


class ServingApp(FastAPI):
    """FastAPI with the front door and the fast path in front of its whole middleware stack.

    Added with `add_middleware` they ran inside FastAPI's own layers (its telemetry check,
    the error, telemetry and body-limit middlewares: a few ASGI frames per request on the
    event loop, which bounds the worker); here an HTTP request meets them first, and
    only what they pass on enters FastAPI. Lifespan and everything else goes to FastAPI
    directly (ADR 0055)."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is not None and scope["type"] == "http":
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def inner(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI itself, behind the front door and the fast path."""
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings, worker: ServingWorker | None = None, topic: bool = False
) -> ServingApp:
    worker = worker or ServingWorker(settings)
    cfg = settings.serving
    keys = KeyRing()
    follower = limits = None
    if settings.auth.mode == "on":
        from streamrec.serving.key_store import KeyFollower
        from streamrec.serving.rate_limit import Limits

        follower = KeyFollower(settings, keys)
        limits = Limits(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if follower is not None:
            follower.start()
        await worker.start()
        server = None
        if topic:
            from streamrec.serving.topic_server import TopicServer

            server = TopicServer(settings, worker, limits=limits)
            server.start()
        try:
            yield
        finally:
            if server is not None:
                await server.stop()
            await worker.stop()
            if follower is not None:
                await asyncio.to_thread(follower.stop)
            if limits is not None:
                await limits.aclose()

    app = ServingApp(
        title="StreamRec serving",
        version="1",
        lifespan=lifespan,
        description="Recommendations within a budget, at a degradation level that says how good.",
    )
    app.state.worker = worker
    app.state.keys = keys
    app.state.key_follower = follower
    app.state.limits = limits

    def answer(response: Answer) -> Response:
        """The `Recommendations` body, written from the answer's arrays with orjson: its
        parts come from the core and the catalog, so FastAPI's second validation of the
        response model (kept on the routes for the OpenAPI schema) is skipped on the hot
        path, and no model is built per item."""
        return Response(response.http_json(worker.catalog.get), media_type="application/json")

    def query_of(
        user_id: str,
        k: int,
        priority: Priority,
        budget_ms: int | None,
        recent: list[str],
        request_id: str | None,
        principal: Principal | None,
    ) -> RecQuery:
        return RecQuery(
            request_id=request_id or new_id(),
            user_id=user_id,
            k=k,
            # The principal's scope sets the highest class: a client may only ask for less.
            priority=principal.priority_for(priority) if principal is not None else priority,
            recent_item_ids=tuple(recent),
            # Only an absent budget is the default: 0 is refused (422) on GET and POST alike.
            budget_ms=cfg.request_budget_ms if budget_ms is None else budget_ms,
            channel="http",
            principal=principal.id if principal is not None else "",
        )

    async def recommend(query: RecQuery) -> Response:
        assert worker.recommender is not None, "lifespan not started"
        return answer(await worker.recommender.recommend(query))

    async def fast_get(
        user_id: str, params: dict[str, str], request_id: str | None, principal: Any
    ) -> Response | None:
        """The GET route for `serving.fast_path`: None when the query does not validate
        (FastAPI then answers it, with its 422 and the reasons)."""
        if worker.recommender is None:
            return None
        k, budget = params.get("k", "20"), params.get("budget_ms")
        if not _digits(k) or (budget is not None and not _digits(budget)):
            return None
        try:
            query = query_of(
                user_id,
                int(k),
                params.get("priority", "interactive"),  # type: ignore[arg-type]  # validated
                int(budget) if budget is not None else None,
                [],
                request_id,
                principal,
            )
        except ValidationError:
            return None
        try:
            return await recommend(query)
        except Overloaded as exc:
            return overloaded_answer(exc)

    @app.get(
        "/v1/users/{user_id}/recommendations",
        response_model=Recommendations,
        responses=REFUSED,
        summary="Recommendations for a user",
    )
    async def get_recommendations(
        request: Request,
        user_id: UserId,
        k: Annotated[int, Query(ge=1, le=200)] = 20,
        priority: Priority = "interactive",
        budget_ms: Annotated[int | None, Query(ge=5, le=10_000)] = None,
        x_request_id: RequestId = None,
    ) -> Response:
        return await recommend(
            query_of(user_id, k, priority, budget_ms, [], x_request_id, principal_of(request.scope))
        )

    @app.post(
        "/v1/users/{user_id}/recommendations",
        response_model=Recommendations,
        responses=REFUSED,
        summary="Recommendations for a user, with the current session's context",
    )
    async def post_recommendations(
        request: Request,
        user_id: UserId,
        body: SessionContext,
        x_request_id: RequestId = None,
    ) -> Response:
        return await recommend(
            query_of(
                user_id,
                body.k,
                body.priority,
                body.budget_ms,
                body.recent_item_ids,
                x_request_id,
                principal_of(request.scope),
            )
        )

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="A ranker and the item snapshot are loaded",
        responses={503: {"description": "not ready yet"}},
    )
    async def readyz() -> JSONResponse:
        parts = worker.readiness()
        if follower is not None:  # a key created before the start must be known
            parts["keys"] = follower.loaded.is_set()
        ready = parts["model"] and parts["items"] and parts.get("keys", True)
        return JSONResponse({"ready": ready, **parts}, status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        body = generate_latest(worker.metrics.registry) + generate_latest(REGISTRY)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def overloaded_answer(exc: Overloaded) -> JSONResponse:
        worker.metrics.rejected.labels("http", "overloaded").inc()
        return JSONResponse(
            Problem(detail=str(exc), retry=False).model_dump(),
            status_code=503,
            headers={"Retry-After": str(exc.retry_after_s), "X-Overloaded": "do-not-retry"},
        )

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return overloaded_answer(exc)

    # Every validation error is a 422 with the reasons, whatever the body held (NaN included).
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ValidationError, invalid_request)

    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)

    def refused(priority: str, kind: str) -> None:
        worker.metrics.shed.labels(priority, kind).inc()
        worker.metrics.rejected.labels("http", "overloaded").inc()

    # In front of FastAPI (`ServingApp`): an overloaded worker refuses first, then plain GETs
    # of the recommendations route skip FastAPI's stack (serving.fast_path).
    front: ASGIApp = FrontDoor(
        FastPath(app.inner, answer=fast_get),
        lag=worker.lag,
        admission=lambda: worker.recommender.admission if worker.recommender else None,
        # admission off (comparison runs only): the front door refuses nothing either
        max_lag_s=cfg.request_budget_ms * cfg.max_queue_share / 1000.0
        if cfg.admission
        else float("inf"),
        retry_after_s=cfg.retry_after_s,
        on_refuse=refused,
    )
    if settings.auth.mode == "on":

        async def limit(principal: Principal, user_id: str | None) -> float | None:
            assert limits is not None
            return await limits.http(principal.id, principal.rate_per_s, user_id)

        front = AuthGate(
            front,
            Authenticator(settings.auth, keys),
            limit,
            guard_metrics=not settings.auth.metrics_open,
            on_refuse=lambda kind: worker.metrics.rejected.labels("http", kind).inc(),
        )
        app.state.authenticator = front.authenticator
    # Outermost: an oversized head is refused before authentication or validation reads it.
    app.front = HeadLimit(front, cfg.max_header_bytes, cfg.max_query_bytes)
    return app
