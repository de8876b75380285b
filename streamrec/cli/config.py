"""`streamrec config`: the settings this process sees, secrets masked."""

from __future__ import annotations

import typer

from streamrec.infra.settings import Settings


def register(app: typer.Typer) -> None:
    app.command("config", help="Print the effective settings as STREAMREC_ variables.")(config)


def config(
    ctx: typer.Context,
    changed: bool = typer.Option(False, "--changed", help="only those not at their default"),
) -> None:
    """One `NAME=value` line per setting, as the environment would set it; secrets show as
    asterisks (a DSN keeps its scheme, host and port)."""
    settings: Settings = ctx.obj
    for name, value in settings.printable(changed_only=changed).items():
        typer.echo(f"{name}={value}")
