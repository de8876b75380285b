"""`streamrec scenario list | run NAME`: cascade scenarios, naive and StreamRec side by side."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import typer
from rich.console import Console
from rich.table import Table

from streamrec.infra.settings import Settings

scenario_app = typer.Typer(help="Cascade scenarios: the same load on naive and StreamRec.")
console = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(scenario_app, name="scenario")


@scenario_app.command("list")
def list_scenarios() -> None:
    """The scenarios, the figure each is judged by, and what naive mode switches off."""
    from streamrec.scenarios.cascades import SCENARIOS

    table = Table(title="scenarios")
    for col in ("name", "figure", "naive switches"):
        table.add_column(col)
    for s in SCENARIOS.values():
        switched = ", ".join(
            f"{section}.{k}={v}"
            for section, fields in s.settings["naive"].items()
            for k, v in fields.items()
        )
        if "naive" not in s.modes:
            switched = "(streamrec mode only)"
        table.add_row(s.name, f"{s.metric} ({s.better} is better)", switched)
    console.print(table)


@scenario_app.command("run")
def run_scenario(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="a name from `streamrec scenario list`"),
    mode: str = typer.Option("both", help="naive | streamrec | both"),
    duration: float = typer.Option(60.0, "--duration", min=2.0, help="seconds of load per mode"),
    seed: int = typer.Option(0, "--seed", help="the workload's seed"),
    report: Path | None = typer.Option(None, "--report", help="write the HTML report here"),
    fresh: bool = typer.Option(
        False, "--fresh", help="run on a new stack in a temporary state dir, removed after"
    ),
) -> None:
    """Run one scenario: the stack (`streamrec up`'s, started if needed), one serving worker
    per mode, open-loop load, then a table and optionally the report."""
    from streamrec.infra.stack import StackManager
    from streamrec.scenarios.cascades import SCENARIOS
    from streamrec.scenarios.report import (
        direction_holds,
        print_line,
        summary_table,
        write_report,
    )
    from streamrec.scenarios.runner import MODES, Mode, run
    from streamrec.streams.admin import TopicManager

    if name not in SCENARIOS:
        raise typer.BadParameter(
            f"unknown scenario; one of {', '.join(SCENARIOS)}", param_hint="NAME"
        )
    if mode not in (*MODES, "both"):
        raise typer.BadParameter("naive, streamrec or both", param_hint="--mode")
    scenario = SCENARIOS[name]
    modes: tuple[Mode, ...] = scenario.modes if mode == "both" else (_mode(mode),)
    # Load experiments on the local stack compare serving modes, not credentials: auth off.
    settings: Settings = ctx.obj.with_overrides(auth={"mode": "off"})
    scratch = None
    if fresh:
        from streamrec.infra.processes import free_port

        scratch = tempfile.mkdtemp(prefix="streamrec-scenario-")
        settings = settings.with_overrides(
            stack={
                "state_dir": Path(scratch),
                "kafka_port": free_port(),
                "kafka_controller_port": free_port(),
                "redis_port": free_port(),
            }
        )
    manager = StackManager(settings)
    manager.up()
    try:
        TopicManager(settings).apply()
        result = run(
            settings,
            scenario,
            modes=modes,
            duration_s=duration,
            seed=seed,
            log=lambda line: print_line(console, line),
        )
    finally:
        if fresh:
            manager.down(purge=True)
    console.print(summary_table(result))
    holds = direction_holds(result)
    if holds is not None:
        verdict = "better" if holds else "NOT better"
        console.print(f"streamrec is {verdict} than naive on {result.metric}")
    if report is not None:
        page = write_report(report, result)
        console.print(f"report: {page}")


def _mode(value: str) -> Literal["naive", "streamrec"]:
    return "naive" if value == "naive" else "streamrec"
