"""Running the serving worker: HTTP (uvicorn), the request topic, or both in one process.

Responsibilities: build the app or the topic server around one `ServingWorker` (or, with
`serving.workers` > 1, let uvicorn run that many worker processes on one port), run it until
SIGINT/SIGTERM, register the process in the live-worker registry (`streams.metrics.serve`,
heartbeat + metrics endpoint for the dashboard), and shut everything down in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from streamrec.infra.settings import Settings
from streamrec.serving.errors import ServingError
from streamrec.streams import metrics as shared_metrics


def run(settings: Settings, http: bool = True, topic: bool = True, log_level: str = "warning"):
    if not (http or topic):
        raise ServingError("nothing to serve: give --http, --topic or both")
    settings = settings.with_overrides(serving={"topic": topic})
    handle = shared_metrics.serve(settings, "serving")
    try:
        if http:
            import uvicorn

            options = dict(
                host=settings.serving.host,
                port=settings.serving.port,
                log_level=log_level,
                access_log=False,
                loop="uvloop",
                http="httptools",
                backlog=4096,
                # No proxy in front whose headers we use: one ASGI layer less per request.
                proxy_headers=False,
                timeout_graceful_shutdown=10,
            )
            if settings.serving.workers > 1:
                # One event loop per core (ADR 0045): the workers share the listening socket
                # and rebuild these settings from the environment (`serving.asgi`).
                os.environ.update(settings.to_env())
                uvicorn.run(
                    "streamrec.serving.asgi:create",
                    factory=True,
                    workers=settings.serving.workers,
                    **options,  # type: ignore[arg-type]
                )
            else:
                from streamrec.serving.app import create_app
                from streamrec.serving.worker import set_ranker_threads

                set_ranker_threads(settings)
                uvicorn.run(create_app(settings, topic=topic), **options)  # type: ignore[arg-type]
        else:
            asyncio.run(_topic_only(settings))
    finally:
        handle.stop()


async def _topic_only(settings: Settings) -> None:
    from streamrec.serving.topic_server import TopicServer
    from streamrec.serving.worker import ServingWorker, set_ranker_threads

    set_ranker_threads(settings)
    worker = ServingWorker(settings)
    await worker.start()
    server = TopicServer(settings, worker)
    server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
        await worker.stop()
