"""Demo steps of analytics: the ClickHouse sink, `streamrec report`, and the live dashboard."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from streamrec.analytics.dashboard import process as dashboard_process
from streamrec.analytics.errors import AnalyticsError
from streamrec.analytics.report import ReportBuilder, render
from streamrec.analytics.store import store_session
from streamrec.processors.analytics_sink import NAME, SOURCES
from streamrec.streams.lag import admin_client, consumer_lags

if TYPE_CHECKING:
    from streamrec.demo import DemoContext


def sink_and_report(ctx: DemoContext) -> None:
    """Run the sink until it has committed everything, then print the report from ClickHouse."""
    group = f"streamrec-{NAME}"
    worker = ctx.start_worker(NAME)
    admin = admin_client(ctx.settings)
    t0 = time.monotonic()
    while True:
        lags = consumer_lags(admin, groups=[group], topics=list(SOURCES)).get(group)
        if lags is not None and sum(lags.values()) == 0:
            break
        if not worker.alive():
            raise AnalyticsError(f"the analytics sink died; see {worker.log}")
        if time.monotonic() - t0 > 120:
            raise AnalyticsError(f"the analytics sink did not catch up in 120 s: lag {lags}")
        time.sleep(0.5)  # polling the group's committed offsets, bounded above
    ctx.console.print(
        f"analytics sink: caught up with {', '.join(SOURCES)} in {time.monotonic() - t0:.1f} s"
    )
    # chDB is in-process: the sink owns the directory while it runs, so the report (this
    # process) reads it once the sink has stopped (ADR 0051). A ClickHouse server DSN has no
    # such limit.
    worker.stop()
    with store_session(ctx.settings) as client:
        report = ReportBuilder(client, ctx.settings).build(minutes=10)
    ctx.console.print(render(report), markup=False, highlight=False)
    ctx.start_worker(NAME)  # back to live ingestion for the rest of the demo


def dashboard(ctx: DemoContext) -> None:
    url = dashboard_process.start_detached(ctx.settings)
    ctx.console.print(
        f"dashboard: {url} (it keeps running after the demo, like the stack; "
        "stop it with `streamrec dashboard --stop`)"
    )
