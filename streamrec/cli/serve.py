"""`streamrec serve`: the serving worker (HTTP API and/or the recs.requests consumer)."""

from __future__ import annotations

import logging

import typer

from streamrec.infra.settings import Settings


def register(app: typer.Typer) -> None:
    app.command("serve", help="Run the serving worker: HTTP API and request-topic consumer.")(serve)


def serve(
    ctx: typer.Context,
    http: bool = typer.Option(True, "--http/--no-http", help="serve the HTTP API"),
    topic: bool = typer.Option(True, "--topic/--no-topic", help="answer recs.requests"),
    host: str | None = typer.Option(None, help="[env STREAMREC_SERVING__HOST]"),
    port: int | None = typer.Option(None, help="[env STREAMREC_SERVING__PORT]"),
    loglevel: str = typer.Option("warning", help="log level"),
) -> None:
    from streamrec.serving.runner import run

    settings: Settings = ctx.obj
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if overrides:
        settings = settings.with_overrides(serving=overrides)
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(name)s %(message)s")
    run(settings, http=http, topic=topic, log_level=loglevel.lower())
