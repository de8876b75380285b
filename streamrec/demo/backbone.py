"""Demo steps of the event backbone: stack, topics, catalog, replay, a consuming agent."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

from rich.table import Table

from streamrec.infra.redis_clients import sync_client
from streamrec.infra.stack import StackManager
from streamrec.processors.interaction_counter import counter_key
from streamrec.streams import datasets
from streamrec.streams.admin import TopicManager
from streamrec.streams.catalog import publish_items
from streamrec.streams.errors import ReplayError
from streamrec.streams.replay import ReplayOptions, replay
from streamrec.streams.sources.movielens import MovieLensInteractions, load_items
from streamrec.topics import EVENTS_INTERACTIONS

if TYPE_CHECKING:
    from streamrec.demo import DemoContext


def start_stack(ctx: DemoContext) -> None:
    manager = StackManager(ctx.settings)
    t0 = time.monotonic()
    started = manager.up()
    ctx.console.print(
        f"stack up in {time.monotonic() - t0:.1f} s "
        f"(started: {', '.join(k for k, v in started.items() if v) or 'none'})"
    )
    table = Table("part", "address", "answers")
    for p in manager.status():
        table.add_row(p.name, p.address, "yes" if p.answers else "NO")
    ctx.console.print(table)


def load_data(ctx: DemoContext) -> None:
    result = TopicManager(ctx.settings).apply()
    ctx.console.print(
        f"topics: {len(result.created)} created, {len(result.altered)} altered, "
        f"{len(result.unchanged)} unchanged"
    )
    directory = datasets.fetch(ctx.settings, "ml-100k")
    n = publish_items(ctx.settings, load_items(directory))
    ctx.console.print(f"catalog: {n:,} items published to catalog.items (ML-100K from {directory})")
    ctx.state["ml100k_dir"] = directory


def replay_and_count(ctx: DemoContext) -> None:
    group = f"demo-counter-{uuid.uuid4().hex[:8]}"
    worker = ctx.start_worker("interaction-counter", group)
    report = replay(
        ctx.settings,
        MovieLensInteractions(ctx.state["ml100k_dir"]),
        "ml-100k",
        ReplayOptions(progress=False),
        total=100_000,
    )
    ctx.state["replay"] = report
    ctx.console.print(
        f"replay: {report.produced:,} events to events.interactions in "
        f"{report.seconds:.2f} s ({report.events_per_s:,.0f} events/s), "
        f"{report.malformed} malformed"
    )
    # A fresh consumer group reads the whole log (earlier demo runs included): wait for all of it.
    store = sync_client(ctx.settings)
    t0 = time.monotonic()
    target = next(
        t.end_offsets
        for t in TopicManager(ctx.settings).list()
        if t.name == EVENTS_INTERACTIONS.name
    )
    count = 0
    while count < target:
        if not worker.alive():
            raise ReplayError(f"the counting worker died; see {worker.log}")
        if time.monotonic() - t0 > 180:
            raise ReplayError(f"the counting worker saw {count}/{target} events in 180 s")
        time.sleep(0.2)  # polling the worker's counter, bounded by the deadline above
        count = sum(int(v or 0) for v in store.mget(counter_key(group), counter_key(group, True)))
    elapsed = time.monotonic() - t0
    ctx.console.print(
        f"a Faust agent (group {group}) consumed the whole log, {count:,} events "
        f"({count / elapsed:,.0f} events/s incl. start-up)"
    )
    table = Table("topic", "partitions", "messages")
    for t in TopicManager(ctx.settings).list():
        table.add_row(t.name, str(t.partitions), f"{t.end_offsets:,}")
    ctx.console.print(table)
    ctx.console.print(f"logs: {ctx.settings.state_dir / 'logs'}")
