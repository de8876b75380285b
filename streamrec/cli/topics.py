"""`streamrec topics apply | list`."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from streamrec.infra.settings import Settings
from streamrec.streams.admin import TopicManager

out = Console()
topics_app = typer.Typer(help="The contract topics of topics/.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(topics_app, name="topics")


@topics_app.command("apply", help="Create or update every topic (idempotent).")
def apply(ctx: typer.Context) -> None:
    settings: Settings = ctx.obj
    result = TopicManager(settings).apply()
    out.print(
        f"created {len(result.created)}, altered {len(result.altered)}, "
        f"unchanged {len(result.unchanged)}"
    )
    for name in result.created:
        out.print(f"  + {name}")
    for name in result.altered:
        out.print(f"  ~ {name}")


@topics_app.command("list", help="Show the topics with partitions, policy and end offsets.")
def list_(ctx: typer.Context) -> None:
    settings: Settings = ctx.obj
    table = Table("topic", "partitions", "cleanup", "retention.ms", "messages (end offsets)")
    for t in TopicManager(settings).list():
        table.add_row(
            t.name, str(t.partitions), t.cleanup_policy, t.retention_ms, str(t.end_offsets)
        )
    out.print(table)
