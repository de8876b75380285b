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
the allowed lateness (per partition) are dropped and counted. Each event is counted once: a
partition's state holds the offset of its last message applied, the batch is acked only after
the states are in the changelog (`DurableTable.changelog_sent`), and a message at or before
that offset, redelivered after a crash, is skipped and counted as redelivered (docs/adr/0135).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import faust

from streamrec.features.online_writer import OnlineWriter
from streamrec.features.session import ts_ms
from streamrec.features.trending import WINDOWS, TrendingState
from streamrec.infra.redis_clients import async_client
from streamrec.infra.settings import FeatureSettings, Settings
from streamrec.processors.batch_context import as_current, durable_table
from streamrec.streams import metrics
from streamrec.streams.app import create_app, faust_topic, partitions_for
from streamrec.streams.dead_letters import FaustDeadLetters
from streamrec.streams.decoding import AgentDecoder
from streamrec.streams.stop_on_failure import stop_on_failure
from streamrec.streams.whole_batch import whole_batch
from streamrec.topics import EVENTS_INTERACTIONS, Interaction
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


def table_key(partition: int) -> bytes:
    return b"p%d" % partition


class PartitionTable(Protocol):
    """Each stream partition's stored `TrendingState` (a Faust table in the worker)."""

    def read(self, event: Any, key: bytes) -> bytes | None: ...

    def write(self, event: Any, key: bytes, value: bytes) -> None: ...


class TrendingProcessor:
    """The per-partition window counts, which partitions changed since the last publish,
    and which items' popularity features must be rewritten."""

    def __init__(
        self, cfg: FeatureSettings, decode: AgentDecoder[Interaction], table: PartitionTable
    ) -> None:
        self.lateness_ms = cfg.allowed_lateness_s * 1000
        self.decode = decode
        self.table = table
        self.states: dict[int, TrendingState] = {}
        self.dirty: set[int] = set()
        self.pushed: dict[str, dict[str, int]] = {}  # item -> last written feature counts

    async def count(self, batch: Sequence[Any]) -> dict[str, int]:
        """Add a batch to its partitions' windows and store the changed states; returns
        the counts (counted, too_late, redelivered, dead).

        A malformed message is dead-lettered every time it is read (dead letters are at
        least once). Any other message at or before its partition's `applied` offset was
        counted before the worker restarted, so it is skipped: the state and its offset are
        one table value, and the batch is acked only after that value is in the changelog.
        """
        counted = late = redelivered = dead = 0
        last_event: dict[int, Any] = {}
        changed: set[int] = set()
        for event in batch:
            interaction = await self.decode(event)
            if interaction is None:
                dead += 1
                continue
            p, offset = event.message.partition, event.message.offset
            state = self.states.get(p)
            if state is None:
                stored = self.table.read(event, table_key(p))
                state = self.states[p] = TrendingState.from_bytes(stored)
                if stored is not None:
                    # Resumed from the changelog: what is published may predate it (the last
                    # owner died before its publish), so it is published again even when
                    # every event of this batch is a redelivery.
                    changed.add(p)
            if state.is_redelivery(offset):
                redelivered += 1
                continue
            if state.add(ts_ms(interaction.ts.timestamp()), interaction.item_id, self.lateness_ms):
                counted += 1
                changed.add(p)
            else:
                late += 1
            state.applied = offset
            last_event[p] = event
        for p, event in last_event.items():
            self.table.write(event, table_key(p), self.states[p].to_bytes())
        self.dirty |= changed
        return {"counted": counted, "too_late": late, "redelivered": redelivered, "dead": dead}

    def take_dirty(self) -> list[int]:
        """The partitions changed since the last call, to publish now."""
        changed = sorted(self.dirty)
        self.dirty.clear()
        return changed

    def latest(self, partitions: Iterable[int]) -> dict[int, dict[str, dict[str, int]]]:
        """partition -> window -> the counts of its latest window."""
        return {p: {w.name: dict(self.states[p].latest(w)[1]) for w in WINDOWS} for p in partitions}

    def window_end(self) -> int:
        """The newest latest-window end over every partition held."""
        return max(s.latest(w)[0] for w in WINDOWS for s in self.states.values())

    def feature_rows(self, totals: dict[str, dict[str, int]], window_end: int) -> list[dict]:
        """Popularity feature rows of every item whose merged counts changed since the last
        call (an item that left both windows gets a row of zeros, then is forgotten)."""
        pushed = self.pushed
        rows = []
        for item in set(totals["1h"]) | set(totals["24h"]) | set(pushed):
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
        return rows

    def revoked(self, partitions: Iterable[int]) -> None:
        """The new owner publishes these partitions from now on; forget our stale copy."""
        for p in partitions:
            self.states.pop(p, None)
            self.dirty.discard(p)


class _FaustPartitions:
    def __init__(self, table: Any) -> None:
        self.table = table

    def read(self, event: Any, key: bytes) -> bytes | None:
        with as_current(event):
            return self.table.get(key)

    def write(self, event: Any, key: bytes, value: bytes) -> None:
        with as_current(event):
            self.table[key] = value


def build(settings: Settings, group: str | None = None) -> faust.App:
    group = group or f"streamrec-{NAME}"
    cfg = settings.features
    flush_s = cfg.trending_flush_ms / 1000
    app = create_app(settings, group)
    metrics.attach(app, settings, NAME)
    source = faust_topic(app, EVENTS_INTERACTIONS)
    n_partitions = partitions_for(app, EVENTS_INTERACTIONS) or settings.kafka.default_partitions
    table = durable_table(
        app,
        TABLE,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=n_partitions,
        help="per-partition TrendingState (features.trending), JSON",
    )
    decode: AgentDecoder[Interaction] = AgentDecoder(
        EVENTS_INTERACTIONS, NAME, FaustDeadLetters(app)
    )
    trending_ = TrendingProcessor(cfg, decode, _FaustPartitions(table))
    store = async_client(settings)
    writer: list[OnlineWriter] = []
    stats = stats_key(group)

    @app.agent(source, name=NAME)
    async def trending(stream: faust.StreamT) -> None:
        processed = metrics.EVENTS_PROCESSED.labels(NAME, EVENTS_INTERACTIONS.name)
        batches, exit_after = 0, settings.faults.trending_exit_after_batch

        async def count(batch: Sequence[Any]) -> dict[str, int]:
            counts = await trending_.count(batch)
            # The states (and their applied offsets) are in the changelog before this
            # batch is acked, so a crash after the commit never loses counts.
            await table.changelog_sent()
            async with store.pipeline(transaction=False) as pipe:
                for name, n in counts.items():
                    pipe.hincrby(stats, name, n)
                await pipe.execute()
            return counts

        # Larger batches than the session processor's: trending is published every flush
        # interval anyway, and each batch rewrites a partition's whole state to the changelog.
        async for batch in stream.take_events(TRENDING_BATCH_MAX, within=flush_s):
            with stop_on_failure(NAME):
                # A stop mid-batch waits for its counts (streams.whole_batch).
                counts = await whole_batch(count(batch))
                batches += 1
                if batches == exit_after:
                    os._exit(99)  # fault injection (tests): a crash before the batch's commit
            processed.inc(counts["counted"] + counts["too_late"] + counts["redelivered"])

    @app.timer(cfg.trending_flush_ms / 1000)
    async def publish() -> None:
        changed = trending_.take_dirty()
        if not changed:
            return
        t0 = time.perf_counter()
        latest = trending_.latest(changed)
        async with store.pipeline(transaction=True) as pipe:
            for p in changed:
                for w in WINDOWS:
                    key = partition_key(w.name, p)
                    pipe.delete(key)
                    if latest[p][w.name]:
                        pipe.zadd(key, latest[p][w.name])
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
        rows = trending_.feature_rows(totals, trending_.window_end())
        if rows:
            if not writer:
                writer.append(OnlineWriter(settings))
            await writer[0].write_async(VIEW, rows)
        metrics.PROCESSING_SECONDS.labels(f"{NAME}-publish").observe(time.perf_counter() - t0)

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        trending_.revoked(tp.partition for tp in revoked if tp.topic == EVENTS_INTERACTIONS.name)

    return app
