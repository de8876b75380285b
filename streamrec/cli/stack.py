"""`streamrec up | down | status | doctor | partition`: the local stack."""

from __future__ import annotations

import time

import typer
from rich.console import Console
from rich.table import Table

from streamrec.infra import netns
from streamrec.infra.errors import StackError
from streamrec.infra.programs import missing_programs
from streamrec.infra.settings import Settings
from streamrec.infra.stack import StackManager

out = Console()


def register(app: typer.Typer) -> None:
    app.command(
        "up", help="Start Kafka (KRaft, one node or --brokers N) and redis-server; idempotent."
    )(up)
    app.command("down", help="Stop what `up` started; --purge also removes the data.")(down)
    app.command("status", help="Show each part, its address and whether it answers.")(status)
    app.command("doctor", help="Check the system programs the stack needs.")(doctor)
    partition = typer.Typer(
        help="Cut a Kafka node of an `up --netns` cluster off the network, and heal it.",
        no_args_is_help=True,
    )
    partition.command("cut", help="Drop every packet to and from node N; it keeps running.")(cut)
    partition.command("heal", help="Join node N to the network again.")(heal)
    app.add_typer(partition, name="partition")


def up(
    ctx: typer.Context,
    secure: bool = typer.Option(
        False,
        help="Kafka over SASL_SSL (SCRAM) and Redis over TLS with a generated CA; the "
        "passwords come from STREAMREC_KAFKA__PASSWORD and STREAMREC_REDIS__PASSWORD",
    ),
    brokers: int | None = typer.Option(
        None,
        min=1,
        max=9,
        help="Kafka nodes, each its own process (3: replication factor 3, min.insync.replicas "
        "2); default STREAMREC_STACK__KAFKA_BROKERS, or the cluster the state dir holds",
    ),
    netns_: bool = typer.Option(
        False,
        "--netns",
        help="each Kafka node in a network namespace of its own, so that `streamrec "
        "partition cut N` can cut it off (root; STREAMREC_STACK__KAFKA_NETNS)",
    ),
) -> None:
    settings: Settings = ctx.obj
    if secure:
        settings = _secured(settings)
    if brokers is not None:
        settings = settings.with_overrides(stack={"kafka_brokers": brokers})
    if netns_:
        settings = settings.with_overrides(stack={"kafka_netns": True})
        # Clients reach the nodes at their namespaces' addresses.
        out.print("clients need: STREAMREC_STACK__KAFKA_NETNS=true", highlight=False)
    _require_programs(settings)
    try:
        manager = StackManager(settings)
    except StackError as exc:
        out.print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(2) from None
    nodes = len(manager.kafka_nodes)
    if nodes > 1:
        # Clients bootstrap from every node and size Faust's changelogs from this setting.
        out.print(f"clients need: STREAMREC_STACK__KAFKA_BROKERS={nodes}", highlight=False)
    started = manager.up()
    for part, did in started.items():
        out.print(f"{part}: {'started' if did else 'already running'}")
    _print_status(settings)


def _secured(settings: Settings) -> Settings:
    """The settings with both transports secured; every client must then run with them."""
    missing = [
        name
        for name, value in (
            ("STREAMREC_KAFKA__PASSWORD", settings.kafka.password),
            ("STREAMREC_REDIS__PASSWORD", settings.redis.password),
        )
        if not value.get_secret_value()
    ]
    if missing:
        out.print(f"[red]--secure needs[/] {', '.join(missing)}", highlight=False)
        raise typer.Exit(2)
    secured = settings.with_overrides(
        kafka={"security_protocol": "SASL_SSL"},
        redis={"tls": True, "username": settings.redis.username or "streamrec"},
    )
    needed = {k: v for k, v in secured.printable(changed_only=True).items() if "PASSWORD" not in k}
    out.print(
        "clients need: "
        + " ".join(
            f"{k}={v}"
            for k, v in needed.items()
            if k.startswith(("STREAMREC_KAFKA", "STREAMREC_REDIS"))
        )
        + " (and the passwords)",
        highlight=False,
        soft_wrap=True,  # one line to copy
    )
    return secured


def down(
    ctx: typer.Context, purge: bool = typer.Option(False, help="remove the state dir")
) -> None:
    settings: Settings = ctx.obj
    stopped = StackManager(settings).down(purge=purge)
    for part, did in stopped.items():
        out.print(f"{part}: {'stopped' if did else 'not running'}")
    if purge:
        out.print(f"removed {settings.state_dir}")


def status(ctx: typer.Context) -> None:
    settings: Settings = ctx.obj
    if not _print_status(settings):
        raise typer.Exit(1)


def doctor(ctx: typer.Context) -> None:
    settings: Settings = ctx.obj
    _require_programs(settings)
    out.print("java 17+, mvn and redis-server found")


def cut(
    ctx: typer.Context,
    node: int = typer.Argument(..., min=1, help="the node's id (1..N)"),
    seconds: float | None = typer.Option(
        None, min=0.1, help="heal it again after this long (default: stay cut until `heal`)"
    ),
) -> None:
    settings: Settings = ctx.obj
    _require_node(settings, node)
    netns.cut(settings, node)
    out.print(f"kafka-{node}: cut off", highlight=False)
    if seconds is None:
        out.print(f"heal it with: streamrec partition heal {node}", highlight=False)
        return
    try:
        time.sleep(seconds)  # the partition's length is what was asked for
    finally:
        netns.heal(settings, node)
    out.print(f"kafka-{node}: healed after {seconds:g} s", highlight=False)


def heal(
    ctx: typer.Context, node: int = typer.Argument(..., min=1, help="the node's id (1..N)")
) -> None:
    settings: Settings = ctx.obj
    _require_node(settings, node)
    netns.heal(settings, node)
    out.print(f"kafka-{node}: healed", highlight=False)


def _require_node(settings: Settings, node: int) -> None:
    nodes = len(StackManager(settings).kafka_nodes)
    if node > nodes:
        raise StackError(f"there is no Kafka node {node}: the stack has {nodes}")


def _require_programs(settings: Settings) -> None:
    problems = missing_programs(
        settings.stack.java, settings.stack.mvn, settings.stack.redis_server
    )
    if problems:
        for p in problems:
            out.print(f"[red]missing:[/] {p}", highlight=False)
        raise typer.Exit(2)


def _print_status(settings: Settings) -> bool:
    table = Table("part", "address", "running", "answers", "detail")
    parts = StackManager(settings).status()
    for p in parts:
        table.add_row(p.name, p.address, _yes(p.running), _yes(p.answers), p.detail)
    out.print(table)
    return all(p.answers for p in parts)


def _yes(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[red]no[/]"
