"""`streamrec keys create | list | revoke`: the serving API's keys, on the auth.keys topic."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from streamrec.errors import ConfigError
from streamrec.infra.settings import Settings

out = Console()
keys_app = typer.Typer(
    help="API keys of the serving API: create (shown once), list, revoke.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


@keys_app.command("create", help="Create a key; it is printed once, only its hash is kept.")
def create(
    ctx: typer.Context,
    scope: str = typer.Option(..., help="user (only --user's recommendations) | service (any)"),
    user: str | None = typer.Option(None, help="the user a user-scoped key may ask for"),
    name: str = typer.Option("", help="what the key is for"),
    priority: str = typer.Option(
        "interactive", help="the highest class its requests get: interactive|prefetch|background"
    ),
    rate: float | None = typer.Option(None, help="requests/s (default: auth.key_rate_per_s)"),
) -> None:
    from pydantic import ValidationError

    from streamrec.serving.auth import key_hash, new_key
    from streamrec.serving.key_store import publish
    from streamrec.topics import ApiKeyRecord

    settings: Settings = ctx.obj
    if scope == "user" and not user:
        raise typer.BadParameter("a user-scoped key needs --user", param_hint="--user")
    if scope == "service" and user:
        raise typer.BadParameter(
            "a service key may ask for any user: no --user", param_hint="--user"
        )
    key_id, key = new_key()
    try:
        record = ApiKeyRecord(
            key_id=key_id,
            key_hash=key_hash(key),
            name=name,
            scope=scope,  # type: ignore[arg-type]  # validated by the model
            subject=user,
            priority=priority,  # type: ignore[arg-type]
            rate_per_s=rate,
        )
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid key: {reasons}") from None
    publish(settings, record)
    out.print(
        f"key id {key_id} ({scope}{f' for user {user}' if user else ''}); the key, shown once:"
    )
    print(key)  # plain, so that a script can take it from stdout's last line


@keys_app.command("list", help="Every key: id, scope, user, state (never the key itself).")
def list_keys(ctx: typer.Context) -> None:
    from streamrec.serving.key_store import read_keys

    settings: Settings = ctx.obj
    table = Table()
    table.add_column("key id", no_wrap=True)  # whole, however narrow the terminal
    for title in ("scope", "user", "priority", "rate/s", "name", "created", "revoked"):
        table.add_column(title)
    for r in sorted(read_keys(settings).values(), key=lambda r: r.created_at):
        table.add_row(
            r.key_id,
            r.scope,
            r.subject or "",
            r.priority,
            f"{r.rate_per_s:g}" if r.rate_per_s else "default",
            r.name,
            f"{r.created_at:%Y-%m-%d %H:%M:%S}",
            f"{r.revoked_at:%Y-%m-%d %H:%M:%S}" if r.revoked_at else "",
        )
    out.print(table)


@keys_app.command("revoke", help="Revoke a key: every serving process refuses it within 1 s.")
def revoke(ctx: typer.Context, key_id: str = typer.Argument(..., help="the key's id")) -> None:
    from streamrec.serving.key_store import publish, read_keys

    settings: Settings = ctx.obj
    record = read_keys(settings).get(key_id)
    if record is None:
        raise ConfigError(f"no key {key_id!r} (streamrec keys list shows them)")
    if record.revoked:
        out.print(f"key {key_id} was revoked already, at {record.revoked_at:%Y-%m-%d %H:%M:%S}")
        return
    publish(settings, record.revoke())
    out.print(f"key {key_id} revoked")
