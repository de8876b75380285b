"""`streamrec replay SOURCE`: produce an event log to events.interactions."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console

from streamrec.infra.settings import Settings
from streamrec.streams import datasets
from streamrec.streams.replay import Checkpoint, ReplayOptions, ReplayReport, replay
from streamrec.streams.sources.eventlog import open_event_log
from streamrec.streams.sources.movielens import MovieLensInteractions

out = Console()


def register(app: typer.Typer) -> None:
    app.command(
        "replay", help="Replay ml-100k, or a JSONL/Parquet event log, to events.interactions."
    )(replay_cmd)


def replay_cmd(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="'ml-100k' or a path to a .jsonl/.parquet event log"),
    since: datetime | None = typer.Option(None, "--from", help="event time, inclusive"),
    until: datetime | None = typer.Option(None, "--to", help="event time, exclusive"),
    rate: float | None = typer.Option(None, "--rate", help="events per second"),
    speedup: float | None = typer.Option(None, "--speedup", help="event time / X"),
    as_fast: bool = typer.Option(False, "--max", help="as fast as possible (the default)"),
    strict: bool = typer.Option(False, "--strict", help="stop at the first malformed row"),
    errors: Path | None = typer.Option(
        None,
        "--errors",
        help="where malformed rows go [default: STATE_DIR/replay-errors-SOURCE.jsonl]",
    ),
    limit: int | None = typer.Option(None, "--limit", help="stop after N events"),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="go on from where an interrupted replay of this source stopped (its checkpoint)",
    ),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        help="the resume position's file [default: STATE_DIR/replay/SOURCE.checkpoint.json]",
    ),
) -> None:
    settings: Settings = ctx.obj
    if sum(x is not None for x in (rate, speedup)) + as_fast > 1:
        raise typer.BadParameter("choose one of --max, --rate, --speedup")
    pacing = "rate" if rate else "speedup" if speedup else "max"
    if source == "ml-100k":
        src = MovieLensInteractions(datasets.fetch(settings, "ml-100k"))
        total = 100_000
    else:
        path = Path(source)
        if not path.exists():
            raise typer.BadParameter(f"no such file: {path}")
        src, total = open_event_log(path), None
    errors_file = errors or settings.state_dir / f"replay-errors-{src.name}.jsonl"
    checkpoint_file = checkpoint or settings.state_dir / "replay" / f"{src.name}.checkpoint.json"
    resume_from = 0
    if resume:
        saved = Checkpoint.load(checkpoint_file)
        if saved is None:
            raise typer.BadParameter(f"no checkpoint to resume from: {checkpoint_file}")
        if saved.done:
            out.print(f"replay of {src.name} already complete ({saved.position:,} rows)")
            return
        resume_from = saved.position
        out.print(f"resuming {src.name} after row {resume_from:,}")
    options = ReplayOptions(
        since=since,
        until=until,
        pacing=pacing,
        rate=rate,
        speedup=speedup,
        strict=strict,
        errors_file=errors_file,
        limit=limit,
        resume_from=resume_from,
        checkpoint_file=checkpoint_file,
    )
    try:
        report = replay(settings, src, src.name, options, total=total)
    except KeyboardInterrupt:
        saved = Checkpoint.load(checkpoint_file)
        at = saved.position if saved else resume_from
        out.print(
            f"interrupted: the first {at:,} rows of {src.name} are acknowledged; "
            "run the same command with --resume to go on from there"
        )
        raise typer.Exit(130) from None
    print_report(report)


def print_report(r: ReplayReport) -> None:
    out.print(
        f"replayed {r.source} -> {r.topic}: {r.produced:,} produced, {r.malformed:,} "
        f"malformed, {r.outside_window:,} outside the window, in {r.seconds:.2f} s "
        f"({r.events_per_s:,.0f} events/s)"
    )
    if r.skipped:
        out.print(f"resumed: skipped the first {r.skipped:,} rows, done before")
    if r.malformed and r.errors_file:
        out.print(f"malformed rows with line and reason: {r.errors_file}")
