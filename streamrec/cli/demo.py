"""`streamrec demo`: the platform end to end on ML-100K, with a short report."""

from __future__ import annotations

import typer

from infra.settings import Settings


def register(app: typer.Typer) -> None:
    app.command("demo", help="Start the stack, load ML-100K, run the platform and report.")(demo)


def demo(ctx: typer.Context) -> None:
    from streamrec.demo import run_demo

    settings: Settings = ctx.obj
    run_demo(settings)
