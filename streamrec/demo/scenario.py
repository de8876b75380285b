"""Demo step: one short cascade scenario, naive against StreamRec, and where its report is.

`llm-rate-limit` for `DURATION_S` seconds per mode on the demo's stack (its ranker, catalog
and the candidates the earlier steps wrote; `scenarios.runner.prepare` adds only what is
missing). The simulated users' clicks go to events.interactions and the answers to
recs.served, so the analytics step after this one reports a CTR per variant and a catalog
coverage that come from them. The scenario is a showcase, not a check of the platform: if
it fails (e.g. the shared machine is too slow to start its workers), the demo says so and
goes on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamrec.demo import DemoContext

NAME = "llm-rate-limit"
DURATION_S = 20.0
log = logging.getLogger(__name__)


def short_scenario(ctx: DemoContext) -> None:
    from streamrec.scenarios.cascades import SCENARIOS
    from streamrec.scenarios.report import (
        direction_holds,
        print_line,
        summary_table,
        write_report,
    )
    from streamrec.scenarios.runner import run

    console = ctx.console
    console.print(
        f"`streamrec scenario run {NAME} --duration {DURATION_S:g}`: the LLM allows 100 "
        "calls/min at the evening peak; naive waits on it per answer, StreamRec does not"
    )
    try:
        result = run(
            ctx.settings,
            SCENARIOS[NAME],
            duration_s=DURATION_S,
            seed=0,
            log=lambda line: print_line(console, line),
        )
    except Exception as exc:  # a showcase: the rest of the demo does not depend on it
        log.exception("the demo's scenario failed")
        console.print(f"[yellow]the scenario did not complete: {exc}; the demo goes on[/]")
        return
    console.print(summary_table(result))
    holds = direction_holds(result)
    if holds is not None:
        console.print(f"streamrec is {'better' if holds else 'NOT better'} on {result.metric}")
    page = write_report(ctx.settings.state_dir / "reports" / NAME, result)
    ctx.state["scenario_report"] = page
    console.print(f"scenario report: {page}")
