"""Running the serving worker: HTTP (uvicorn), the request topic, or both in one process.

Responsibilities:
- one process: build the app or the topic server around one `ServingWorker`, run it until
  SIGINT/SIGTERM, register the process in the live-worker registry (`streams.metrics.serve`,
  heartbeat + metrics endpoint for the dashboard), and shut everything down in order;
- `serving.workers` > 1: supervise that many such processes (`serving.supervisor`). Each
  binds the port with SO_REUSEPORT, so the kernel spreads connections over them, joins the
  request topic's consumer group, and has its own batcher, heartbeat and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket

from streamrec.infra.settings import Settings
from streamrec.serving.errors import ServingError
from streamrec.streams import metrics as shared_metrics


def run(settings: Settings, http: bool = True, topic: bool = True, log_level: str = "warning"):
    if not (http or topic):
        raise ServingError("nothing to serve: give --http, --topic or both")
    settings = settings.with_overrides(serving={"topic": topic})
    if settings.serving.workers > 1 and not settings.serving.reuse_port:
        from streamrec.serving.supervisor import supervise

        supervise(settings, http=http, topic=topic, log_level=log_level)
        return
    handle = shared_metrics.serve(settings, "serving")
    try:
        if http:
            _serve_http(settings, topic, log_level)
        else:
            asyncio.run(_topic_only(settings))
    finally:
        handle.stop()


# The accept queue of each process's socket; uvicorn's default is 2048.
BACKLOG = 4096


def bound_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """The HTTP socket, bound but not yet listening: uvicorn listens on it once the app's
    lifespan has started (the model loaded, Redis and Kafka reached). With `reuse_port`,
    every process of the group binds its own (SO_REUSEPORT) and the kernel hashes
    connections across the listening ones only, so a process still starting, or one whose
    start fails, holds no connection in its queue; a socket listening from the bind would
    keep such connections waiting, and reset them if the start failed. One inherited socket
    would instead wake whichever process's event loop polls first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServingError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.set_inheritable(False)
    return sock


def _serve_http(settings: Settings, topic: bool, log_level: str) -> None:
    import uvicorn

    from streamrec.serving.app import create_app
    from streamrec.serving.worker import set_ranker_threads

    set_ranker_threads(settings)
    cfg = settings.serving
    config = uvicorn.Config(
        create_app(settings, topic=topic),
        log_level=log_level,
        access_log=False,
        loop="uvloop",
        http="httptools",
        # No proxy in front whose headers we use: one ASGI layer less per request.
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        backlog=BACKLOG,
    )
    # Bound first, so a taken port fails before the model loads; listened on after.
    sock = bound_socket(cfg.host, cfg.port, cfg.reuse_port)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


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
