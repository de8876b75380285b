"""`streamrec catalog upsert | remove`: single catalog changes, as events on catalog.items.

Added to the `catalog` group that `streamrec.cli.data` declares (beside `catalog load`), so
a new popular item can be injected by hand or by a scenario script.
"""

from __future__ import annotations

import typer
from rich.console import Console

from streamrec.cli.data import catalog_app
from streamrec.infra.settings import Settings
from streamrec.streams.catalog import publish_items
from streamrec.topics import CatalogItem

out = Console()


def register(app: typer.Typer) -> None:
    """The commands attach to `catalog_app` when this module is imported; nothing else."""


@catalog_app.command("upsert", help="Publish one item's full metadata (new or changed).")
def upsert(
    ctx: typer.Context,
    item_id: str = typer.Argument(..., help="the item id"),
    title: str = typer.Option(..., help="title"),
    year: int | None = typer.Option(None, help="release year"),
    genre: list[str] = typer.Option([], help="a genre (repeat the option for several)"),
    description: str | None = typer.Option(None, help="free text"),
    popularity: float = typer.Option(0.0, help="popularity hint: higher is embedded first"),
) -> None:
    settings: Settings = ctx.obj
    item = CatalogItem(
        item_id=item_id,
        title=title,
        year=year,
        genres=genre,
        description=description,
        popularity_hint=popularity,
    )
    publish_items(settings, [item])
    out.print(f"published upsert of {item_id!r} to catalog.items")


@catalog_app.command("remove", help="Publish an item's removal (its vector gets a tombstone).")
def remove(ctx: typer.Context, item_id: str = typer.Argument(..., help="the item id")) -> None:
    settings: Settings = ctx.obj
    publish_items(settings, [CatalogItem(item_id=item_id, op="remove")])
    out.print(f"published removal of {item_id!r} to catalog.items")
