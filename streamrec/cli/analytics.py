"""`streamrec report` and `streamrec dashboard`: analytics from ClickHouse and the live map."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from streamrec.infra.redis_clients import sync_client
from streamrec.infra.settings import Settings

if TYPE_CHECKING:
    from streamrec.analytics.skew import SkewReport


def register(app: typer.Typer) -> None:
    app.command("report", help="Traffic, latency, levels, CTR per variant, coverage, ranker skew.")(
        report
    )
    app.command("dashboard", help="Serve the live topology map (Ctrl-C stops it).")(dashboard)
    app.command("audit", help="Who fetched a user's recommendations on a day (UTC).")(audit)


def audit(
    ctx: typer.Context,
    user: str = typer.Option(..., help="the user whose recommendations were fetched"),
    day: str = typer.Option("yesterday", help="YYYY-MM-DD, today or yesterday (UTC)"),
) -> None:
    from datetime import UTC, date, datetime, time, timedelta

    from streamrec.analytics.audit import who_asked
    from streamrec.analytics.store import store_session

    settings: Settings = ctx.obj
    today = datetime.now(UTC).date()
    named = {"today": today, "yesterday": today - timedelta(days=1)}
    try:
        chosen = named[day] if day in named else date.fromisoformat(day)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--day") from exc
    start = datetime.combine(chosen, time(), UTC)
    with store_session(settings) as client:
        rows = who_asked(client, settings.clickhouse.database, user, start, start + timedelta(1))
    for row in rows:
        typer.echo(f"{row.principal or '(auth off)'}\t{row.answers}\t{row.first}\t{row.last}")
    if not rows:
        typer.echo(f"no answers for user {user} on {chosen}")


def report(
    ctx: typer.Context,
    minutes: int = typer.Option(15, min=1, help="per-minute rows: the last N minutes"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    from streamrec.analytics.report import ReportBuilder, render
    from streamrec.analytics.store import store_session

    settings: Settings = ctx.obj
    with store_session(settings) as client:
        result = ReportBuilder(client, settings).build(minutes=minutes)
    result = result.model_copy(update={"skew": _skew(settings)})
    typer.echo(result.model_dump_json(indent=2) if as_json else render(result))


def _skew(settings: Settings) -> SkewReport | None:
    """The promoted ranker's skew (registry + Redis); None, said on stderr, when Redis does
    not answer: the rest of the report does not need it."""
    import redis

    from streamrec.analytics.skew_source import read_skew

    client = sync_client(settings, socket_timeout=5.0)
    try:
        return read_skew(settings, client)
    except redis.RedisError as exc:
        typer.echo(f"skew not read: {exc}", err=True)
        return None
    finally:
        client.close()


def dashboard(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="default: analytics.dashboard_host"),
    port: int | None = typer.Option(None, help="default: analytics.dashboard_port"),
    detach: bool = typer.Option(False, help="run in the background (stop with --stop)"),
    stop: bool = typer.Option(False, help="stop a dashboard started with --detach"),
) -> None:
    from streamrec.analytics.dashboard import process

    settings: Settings = ctx.obj
    overrides = {k: v for k, v in (("dashboard_host", host), ("dashboard_port", port)) if v}
    if overrides:
        settings = settings.with_overrides(analytics=overrides)
    if stop:
        stopped = process.stop_detached(settings)
        typer.echo("dashboard stopped" if stopped else "no detached dashboard was running")
        return
    if detach:
        typer.echo(f"dashboard: {process.start_detached(settings)} (running in the background)")
        return

    import uvicorn

    from streamrec.analytics.dashboard.app import create_app

    typer.echo(f"dashboard: {process.url_of(settings)}")
    a = settings.analytics
    uvicorn.run(
        create_app(settings), host=a.dashboard_host, port=a.dashboard_port, log_level="warning"
    )
