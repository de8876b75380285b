"""`streamrec worker NAME`: run one stream processor (a Faust worker) in the foreground."""

from __future__ import annotations

import logging

import typer

from streamrec.infra.settings import Settings
from streamrec.processors.registry import WORKERS, build_worker

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    app.command("worker", help=f"Run a processor: {', '.join(sorted(WORKERS))}.")(worker)
    app.command("workers", help="List the processors `worker` can run.")(workers)


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


def workers() -> None:
    for name, module in sorted(WORKERS.items()):
        typer.echo(f"{name}\t{module}")
