"""`streamrec worker NAME`: run one stream processor (a Faust worker) in the foreground.

`streamrec workers` lists the processors (offline); `--owners` asks the broker which process
of each group owns which partitions (`streams.owners`).
"""

from __future__ import annotations

import json
import logging

import typer

from streamrec.infra.settings import Settings
from streamrec.processors.registry import WORKERS, build_worker

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    app.command("worker", help=f"Run a processor: {', '.join(sorted(WORKERS))}.")(worker)
    app.command(
        "workers",
        help="List the processors `worker` can run; --owners: which process of each consumer "
        "group owns which partitions, with their lag (asks the broker).",
    )(workers)


def worker(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="processor name"),
    group: str | None = typer.Option(None, help="consumer group (default: streamrec-NAME)"),
    loglevel: str = typer.Option("info", help="faust/worker log level"),
) -> None:
    from faust.worker import Worker

    settings: Settings = ctx.obj

    class _Worker(Worker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            # No progress spinner: faust sets the root logger to DEBUG so that it spins on
            # every record, and every debug call in faust/aiokafka (several per message) then
            # builds a LogRecord that the handlers drop.
            self.spinner = None

        async def on_execute(self) -> None:
            await super().on_execute()
            # Logging is set up by now. What differs from the defaults is what the worker was
            # started with; secrets are masked.
            changed = settings.printable(changed_only=True)
            shown = " ".join(f"{k}={v}" for k, v in changed.items())
            log.info("worker %s settings: %s", name, shown or "all defaults")

    app = build_worker(name, settings, group=group)
    _Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


def workers(
    ctx: typer.Context,
    owners: bool = typer.Option(
        False, "--owners", help="each group's members and the partitions they own (asks Kafka)"
    ),
    group: list[str] = typer.Option(
        [],
        "--group",
        help="a consumer group to show, implies --owners (repeatable; default: streamrec-NAME "
        "of every worker and serving's group)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    timeout_s: float = typer.Option(5.0, "--timeout", min=0.1, help="seconds to reach Kafka"),
) -> None:
    if not owners and not group:
        if as_json:
            typer.echo(json.dumps(dict(sorted(WORKERS.items())), indent=2))
            return
        for name, module in sorted(WORKERS.items()):
            typer.echo(f"{name}\t{module}")
        return
    from streamrec.streams.owners import describe_owners, render

    settings: Settings = ctx.obj
    # The groups' default names (processors.registry's convention), then serving's.
    groups = group or [
        *(f"streamrec-{name}" for name in sorted(WORKERS)),
        settings.serving.consumer_group,
    ]
    described = describe_owners(settings, list(dict.fromkeys(groups)), timeout_s=timeout_s)
    if as_json:
        typer.echo(json.dumps({"groups": [g.model_dump() for g in described]}, indent=2))
        return
    for line in render(described):
        typer.echo(line)
