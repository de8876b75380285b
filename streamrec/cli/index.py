"""`streamrec index list | rollback [VERSION] | similar ITEM`: the vector index snapshots."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from streamrec.infra.settings import Settings
from streamrec.streams.producer import flush, latency_producer, produce_event
from streamrec.topics import REGISTRY_CHANGES
from streamrec.vectors import IndexReader, SnapshotStore

out = Console()
index_app = typer.Typer(help="Vector index snapshots (FAISS).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")


@index_app.command("list", help="Snapshots, oldest first; * marks the promoted one.")
def list_(ctx: typer.Context) -> None:
    settings: Settings = ctx.obj
    snapshots = SnapshotStore(settings).list()
    table = Table("", "version", "items", "kind", "recall@k", "build s")
    table.columns[1].no_wrap = True
    for s in snapshots:
        table.add_row(
            "*" if s.promoted else "",
            s.version,
            f"{s.item_count:,}",
            s.index_kind,
            f"{s.recall:.3f}",
            f"{s.build_seconds:.2f}",
        )
    out.print(table)
    models = sorted({f"{s.model_version} ({s.dim}-d)" for s in snapshots})
    out.print(f"model: {', '.join(models) or '-'}; versions are UTC build times")


@index_app.command("rollback", help="Promote VERSION (default: the previously promoted one).")
def rollback(
    ctx: typer.Context,
    version: str | None = typer.Argument(None, help="snapshot version"),
    announce: bool = typer.Option(True, help="publish the change to registry.changes"),
) -> None:
    settings: Settings = ctx.obj
    change = SnapshotStore(settings).rollback(version)
    if announce:
        producer = latency_producer(settings)
        produce_event(producer, REGISTRY_CHANGES, change)
        flush(producer)
    out.print(f"index now at {change.version} (readers pick it up within their poll interval)")


@index_app.command("similar", help="The nearest items to ITEM in the promoted snapshot.")
def similar(
    ctx: typer.Context,
    item_id: str = typer.Argument(..., help="item id"),
    k: int = typer.Option(10, "-k", help="how many"),
) -> None:
    settings: Settings = ctx.obj
    reader = IndexReader(settings)
    out.print(f"index {reader.snapshot.version}")
    for other, score in reader.similar(item_id, k):
        out.print(f"{score:.3f}  {other}")
