"""The dashboard web app (starlette): the page, its state as JSON, and its own /metrics.

Routes: `/` the page (plain HTML/JS/SVG, nothing from outside: no CDN is reachable),
`/api/state` the latest `State`, `/metrics` the dashboard's own Prometheus metrics (consumer
lag of every group). The collector runs in the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from streamrec.analytics.dashboard.collector import Collector
from streamrec.infra.settings import Settings

PAGE = Path(__file__).with_name("page.html")


def create_app(settings: Settings) -> Starlette:
    collector = Collector(settings)
    template = PAGE.read_text()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await collector.refresh()
        task = asyncio.create_task(collector.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await collector.close()

    async def page(request: Request) -> HTMLResponse:
        state = collector.state.model_dump_json() if collector.state else "null"
        # The first state is inlined, so the page draws without waiting for a fetch.
        body = template.replace("/*INITIAL_STATE*/null", state.replace("</", "<\\/"))
        body = body.replace(
            "/*INTERVAL_MS*/2000", str(int(settings.analytics.dashboard_interval_s * 1000))
        )
        return HTMLResponse(body)

    async def state(request: Request) -> JSONResponse:
        if collector.state is None:
            return JSONResponse({"detail": "collecting"}, status_code=503)
        return JSONResponse(json.loads(collector.state.model_dump_json()))

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/api/state", state),
            Route("/metrics", prometheus),
        ],
        lifespan=lifespan,
    )
    app.state.collector = collector
    return app
