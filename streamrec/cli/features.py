"""`streamrec features apply | show` and `streamrec backfill features`."""

from __future__ import annotations

import typer
from rich.console import Console

from streamrec.infra.settings import Settings

out = Console()
features_app = typer.Typer(help="The Feast repo (features/feature_repo).", no_args_is_help=True)
backfill_app = typer.Typer(help="Recompute derived state from the whole log.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(features_app, name="features")
    app.add_typer(backfill_app, name="backfill")


@features_app.command("apply", help="Register entities, views and services (idempotent).")
def apply(ctx: typer.Context) -> None:
    from streamrec.features import feast_store

    settings: Settings = ctx.obj
    names = feast_store.apply(settings)
    out.print(f"applied {len(names)} Feast objects to {feast_store.features_dir(settings)}:")
    for name in names:
        out.print(f"  {name}")


@features_app.command("show", help="Print the online features of some users.")
def show(ctx: typer.Context, user_ids: list[str] = typer.Argument(..., help="user ids")) -> None:
    from streamrec.features.online import OnlineFeatures

    settings: Settings = ctx.obj
    for user_id, feats in OnlineFeatures(settings).get_user_features(user_ids).items():
        out.print(f"[bold]{user_id}[/]", feats.model_dump(exclude={"user_id"}))


@backfill_app.command(
    "features",
    help="Recompute every feature from the whole events.interactions log (and the catalog) "
    "and write the offline Parquet files (point-in-time history) and the online store.",
)
def backfill_features(
    ctx: typer.Context,
    online: bool = typer.Option(True, help="also write the latest values to the online store"),
) -> None:
    from streamrec.features.backfill import run_backfill

    settings: Settings = ctx.obj
    report = run_backfill(settings, write_online=online)
    out.print(report.summary())
