"""`streamrec report` and `streamrec dashboard`: analytics from ClickHouse and the live map."""

from __future__ import annotations

import typer

from infra.settings import Settings


def register(app: typer.Typer) -> None:
    app.command("report", help="Traffic, latency, levels, CTR per variant, coverage.")(report)
    app.command("dashboard", help="Serve the live topology map (Ctrl-C stops it).")(dashboard)


def report(
    ctx: typer.Context,
    minutes: int = typer.Option(15, min=1, help="per-minute rows: the last N minutes"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    from analytics.report import ReportBuilder, render
    from analytics.store import open_store

    settings: Settings = ctx.obj
    result = ReportBuilder(open_store(settings), settings).build(minutes=minutes)
    typer.echo(result.model_dump_json(indent=2) if as_json else render(result))


def dashboard(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="default: analytics.dashboard_host"),
    port: int | None = typer.Option(None, help="default: analytics.dashboard_port"),
) -> None:
    import uvicorn

    from analytics.dashboard.app import create_app

    settings: Settings = ctx.obj
    host = host or settings.analytics.dashboard_host
    port = port if port is not None else settings.analytics.dashboard_port
    typer.echo(f"dashboard: http://{host}:{port}/")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
