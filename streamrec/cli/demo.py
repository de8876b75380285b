"""`streamrec demo`: the platform end to end on ML-100K, with a short report."""

from __future__ import annotations

import typer

from streamrec.infra.settings import Settings


def register(app: typer.Typer) -> None:
    app.command("demo", help="Start the stack, load ML-100K, run the platform and report.")(demo)


def demo(
    ctx: typer.Context,
    steps: str = typer.Option(
        "",
        "--steps",
        help="only the steps whose title contains one of these comma-separated words, e.g. "
        "'stack,invalidation' (re-runs a step on a stack a full demo prepared)",
    ),
) -> None:
    from streamrec.demo import run_demo, select_steps

    settings: Settings = ctx.obj
    words = [w for w in steps.split(",") if w.strip()] or None
    try:
        select_steps(words)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--steps") from exc
    run_demo(settings, steps=words)
