"""Demo step of the invalidation processor: a new popular item arrives during a load run.

The invalidation worker runs in its default (coalescing) mode while a steady request load
reads a response cache in front of the users' precomputed candidates
(`scenarios.invalidation_load`). A "viral" new film is published; the report shows how the
cache hit ratio held, how many computations it cost, and how fast the film reached the
candidates of the users it suits. The scenario's users and their tastes come from
events.interactions, the log the processor reads (ML-100K plus the live users of earlier
steps), so both agree on whom the film suits; its phase ends once all of them have it (at
most `VIRAL_MAX_S`). The users' candidate lists are put back as they were afterwards (the
scenario writes its own content-only lists while it runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis
from rich.table import Table

from streamrec.infra.redis_clients import sync_client
from streamrec.scenarios.invalidation_load import POPULAR_TEMPLATE, World, run_mode
from streamrec.streams import datasets
from streamrec.streams.admin import TopicManager
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import CATALOG_VECTORS, EVENTS_INTERACTIONS
from streamrec.topics.stores import USER_CANDIDATES

if TYPE_CHECKING:
    from streamrec.demo import DemoContext

# The film's phase ends when every user it suits has it, at the latest after this long.
VIRAL_MAX_S = 45


def _snapshot(client: redis.Redis) -> dict[bytes, bytes]:
    keys = list(client.scan_iter(match=USER_CANDIDATES.key(user_id="*"), count=1000))
    values = client.mget(keys) if keys else []
    return {k: v for k, v in zip(keys, values, strict=True) if v is not None}


def viral_item(ctx: DemoContext) -> None:
    s = ctx.settings.with_overrides(
        invalidation={
            "window_s": 1.0,
            "await_index_s": 0.0,  # the scenario's index holds the film when it is published
            "refresh_rate_per_s": 8.0,
            "refresh_burst": 1,  # paced evenly: a pass does not start with a burst
            "neighbour_rank": 50,  # the processor's default content depth
        }
    )
    directory = ctx.state.get("ml100k_dir") or datasets.fetch(s)
    ends = {t.name: t.end_offsets for t in TopicManager(s).list()}
    logged = ends.get(EVENTS_INTERACTIONS.name, 0) > 0
    # The scenario's read path takes its users' tastes from the same log as the processor:
    # the earlier steps' live users (e.g. the freshness probe's) are near the film too, and
    # as the most recently active they are refreshed first.
    world = World.load(
        s,
        directory,
        reuse_vectors=ends.get(CATALOG_VECTORS.name, 0) > 0,
        interactions_from_log=logged,
    )
    if ends.get(CATALOG_VECTORS.name, 0) == 0 or not logged:  # a stack the demo did not fill
        world.publish(s, interactions=not logged)
    client = sync_client(s)
    saved = _snapshot(client)
    # The scenario acts on the refresh commands itself (its candidates are content-only and
    # its index holds the new film at once); a running candidates worker would race it.
    paused = [
        w
        for w in ctx.workers
        if isinstance(w, WorkerProcess) and w.name == "candidates" and w.alive()
    ]
    for worker in paused:
        worker.stop()
        ctx.workers.remove(worker)
    try:
        r = run_mode(
            s,
            world,
            "coalesce",
            rate=200,
            ttl_s=5.0,
            warmup_s=3,
            steady_s=6,
            viral_s=VIRAL_MAX_S,
            promotion_s=0,
            template=POPULAR_TEMPLATE,
            log=ctx.console.print,
            end_when_reached=True,
        )
    finally:
        stale = set(_snapshot(client)) - set(saved)
        if stale:
            client.delete(*stale)
        if saved:
            client.mset(saved)
        client.close()
        for worker in paused:
            ctx.start_worker(worker.name, worker.group)
    table = Table("figure", "value")
    table.add_row("cache hit ratio, steady", f"{r.hit_ratio['steady'] * 100:.1f} %")
    table.add_row(
        "cache hit ratio after the new film (worst second)",
        f"{r.hit_ratio['viral'] * 100:.1f} % ({r.hit_ratio['viral_min'] * 100:.1f} %)",
    )
    table.add_row(
        "computations/s: steady mean, peak after the film (3 s mean)",
        f"{r.computations['steady_mean']:.0f}, {r.computations['viral_peak_smooth']:.0f} "
        f"({r.amplification['viral']:.2f}x)",
    )
    if "viral_refreshing_mean" in r.amplification:
        table.add_row(
            "computations/s while the film's refreshes ran: mean",
            f"{r.computations['viral_refreshing_mean']:.0f} "
            f"({r.amplification['viral_refreshing_mean']:.2f}x)",
        )
    table.add_row(
        "refresh commands in the busiest 1 s / 3 s (bound)",
        f"{r.max_refreshes['1s']} / {r.max_refreshes['3s']} "
        f"({r.max_refreshes['1s_bound']} / {r.max_refreshes['3s_bound']})",
    )
    suits = r.worker.get("changes", r.affected)  # one pass: one change per user it suits
    table.add_row("users the film suits (refresh commands received)", f"{suits} ({r.affected})")
    table.add_row("of them, with the film in their candidates", f"{r.reached}/{suits}")
    everyone = r.reach_s is not None and r.reached >= suits
    reach = f"{r.reach_s:.1f} s" if everyone else f"not all within {VIRAL_MAX_S} s"
    median = f"{r.reach_p50_s:.1f} s" if r.reach_p50_s is not None else "n/a"
    table.add_row("time until all of them had it (median)", f"{reach} ({median})")
    ctx.console.print(table)
    ctx.console.print(
        "refreshes are rate-bounded (8/s here) and never delete what readers use: the hit "
        "ratio holds while the film spreads; `python -m benchmarks.invalidation_bench` "
        "compares this with broadcast invalidation"
    )
