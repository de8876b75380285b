"""Trending processor: event-time windowed item counts -> POPULAR lists and popularity features.

Responsibilities:
- consume events.interactions in batches (up to 10,000 events or one flush interval) and
  count items per hopping window on event
  time (`features.trending.WINDOWS`: 1 h hop 5 min, 24 h hop 1 h), one `TrendingState` per
  stream partition in a Faust table (changelog-backed, so a restarted worker resumes);
- every `features.trending_flush_ms`, for the partitions that changed: write each
  partition's latest-window counts to `popular:{window}:p{partition}`, merge all partitions
  into `topics.stores.POPULAR` (`popular:1h`, `popular:24h`, top `trending_top_n` items by
  count) with ZUNIONSTORE, and write the changed items' counts to `item_popularity_fv`.

Events are keyed by user, so one item's events are spread over every partition: each
worker counts its own partitions and Redis adds them up (a partition's key is only written by
its owner). The "latest window" of a partition is the one holding its watermark (its
newest event time); partitions of a replay advance together, so their windows line up.

Failure policy: malformed messages go to dead.letters with the reason; events older than
the allowed lateness (per partition) are dropped and counted. Counting is at least once: a
crash between the table write and the offset commit can count a batch twice (docs/adr/0023);
the session features, which must be exact, dedup by event id instead.
"""

from __future__ import annotations

import time
from typing import Any

import faust
import redis.asyncio as aioredis

from streamrec.features.online_writer import OnlineWriter
from streamrec.features.session import ts_ms
from streamrec.features.trending import WINDOWS, TrendingState
from streamrec.infra.settings import Settings
from streamrec.processors.batch_context import as_current
from streamrec.streams import codecs, metrics
from streamrec.streams.app import create_app, faust_topic
from streamrec.streams.dead_letters import FaustDeadLetters
from streamrec.topics import EVENTS_INTERACTIONS, Interaction
from streamrec.topics.errors import SchemaError
from streamrec.topics.stores import POPULAR

NAME = "trending"
VIEW = "item_popularity_fv"
TABLE = "trending-partitions"
TRENDING_BATCH_MAX = 10_000


def partition_key(window: str, partition: int) -> str:
    return POPULAR.key(window=f"{window}:p{partition}")


def all_key(window: str) -> str:
    """Every partition's counts merged, untrimmed (the popularity features read it)."""
    return POPULAR.key(window=f"{window}:all")


def stats_key(group: str) -> str:
    return f"streamrec:trending:stats:{group}"


def build(settings: Settings, group: str | None = None) -> faust.App:
    group = group or f"streamrec-{NAME}"
    cfg = settings.features
    lateness_ms = cfg.allowed_lateness_s * 1000
    flush_s = cfg.trending_flush_ms / 1000
    app = create_app(settings, group)
    metrics.attach(app, settings, NAME)
    source = faust_topic(app, EVENTS_INTERACTIONS)
    n_partitions = EVENTS_INTERACTIONS.partitions or settings.kafka.default_partitions
    table = app.Table(
        TABLE,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=n_partitions,
        help="per-partition TrendingState (features.trending), JSON",
    )
    dead_letters = FaustDeadLetters(app, NAME)
    store = aioredis.from_url(settings.redis_url)
    states: dict[int, TrendingState] = {}
    dirty: set[int] = set()
    pushed: dict[str, dict[str, int]] = {}  # item -> last written feature counts
    writer: list[OnlineWriter] = []
    stats = stats_key(group)

    @app.agent(source, name=NAME)
    async def trending(stream: faust.StreamT) -> None:
        processed = metrics.EVENTS_PROCESSED.labels(NAME, EVENTS_INTERACTIONS.name)
        # Larger batches than the session processor's: trending is published every flush
        # interval anyway, and each batch rewrites a partition's whole state to the changelog.
        async for batch in stream.take_events(TRENDING_BATCH_MAX, within=flush_s):
            counted = late = dead = 0
            last_event: dict[int, Any] = {}
            for event in batch:
                try:
                    interaction = codecs.decode(EVENTS_INTERACTIONS, event.value)
                except SchemaError as exc:
                    await dead_letters.send(event, exc.reason)
                    dead += 1
                    continue
                assert isinstance(interaction, Interaction)
                p = event.message.partition
                state = states.get(p)
                if state is None:
                    with as_current(event):
                        state = states[p] = TrendingState.from_bytes(table.get(b"p%d" % p))
                if state.add(ts_ms(interaction.ts.timestamp()), interaction.item_id, lateness_ms):
                    counted += 1
                    last_event[p] = event
                else:
                    late += 1
            for p, event in last_event.items():
                with as_current(event):
                    table[b"p%d" % p] = states[p].to_bytes()
                dirty.add(p)
            async with store.pipeline(transaction=False) as pipe:
                pipe.hincrby(stats, "counted", counted)
                pipe.hincrby(stats, "too_late", late)
                pipe.hincrby(stats, "dead", dead)
                await pipe.execute()
            processed.inc(counted + late)

    @app.timer(cfg.trending_flush_ms / 1000)
    async def publish() -> None:
        if not dirty:
            return
        changed = sorted(dirty)
        dirty.clear()
        t0 = time.perf_counter()
        ends: dict[str, int] = {}
        async with store.pipeline(transaction=True) as pipe:
            for p in changed:
                for w in WINDOWS:
                    _end, counts = states[p].latest(w)
                    key = partition_key(w.name, p)
                    pipe.delete(key)
                    if counts:
                        pipe.zadd(key, dict(counts))
            for w in WINDOWS:
                merged, target = all_key(w.name), POPULAR.key(window=w.name)
                pipe.zunionstore(merged, [partition_key(w.name, p) for p in range(n_partitions)])
                pipe.zunionstore(target, [merged])
                pipe.zremrangebyrank(target, 0, -(cfg.trending_top_n + 1))
            for w in WINDOWS:
                pipe.zrange(all_key(w.name), 0, -1, withscores=True)
            replies = await pipe.execute()
        totals = {
            w.name: {m.decode(): int(score) for m, score in reply}
            for w, reply in zip(WINDOWS, replies[-len(WINDOWS) :], strict=True)
        }
        for w in WINDOWS:
            ends[w.name] = max(s.latest(w)[0] for s in states.values())
        await _write_features(totals, max(ends.values()))
        metrics.PROCESSING_SECONDS.labels(f"{NAME}-publish").observe(time.perf_counter() - t0)

    async def _write_features(totals: dict[str, dict[str, int]], window_end: int) -> None:
        """Popularity features of every item whose window counts changed since last time."""
        items = set(totals["1h"]) | set(totals["24h"]) | set(pushed)
        rows = []
        for item in items:
            now = {"count_1h": totals["1h"].get(item, 0), "count_24h": totals["24h"].get(item, 0)}
            if pushed.get(item) != now:
                rows.append(
                    {
                        "item_id": item,
                        **now,
                        "window_end_ms": window_end,
                        "event_timestamp": window_end,
                    }
                )
                pushed[item] = now
        for item in [i for i, c in pushed.items() if not any(c.values())]:
            del pushed[item]
        if rows:
            if not writer:
                writer.append(OnlineWriter(settings))
            await writer[0].write_async(VIEW, rows)

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        # The new owner publishes these partitions from now on; forget our stale copy.
        for tp in revoked:
            if tp.topic == EVENTS_INTERACTIONS.name:
                states.pop(tp.partition, None)
                dirty.discard(tp.partition)

    return app
