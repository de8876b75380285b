"""Session features processor: events.interactions -> user session features in Feast (Redis).

Responsibilities:
- consume events.interactions (keyed by user) in micro-batches bounded by size and time
  (`features.batch_max` events, `features.batch_ms` ms);
- keep each user's `SessionState` in a Faust table backed by its changelog topic (local
  store: RocksDB through rocksdict), so a restarted or moved worker recovers it; a batch
  writes its states with `DurableTable.put` (local store + changelog through librdkafka,
  not faust's per-key path), and the decoded states of the owned partitions stay in a
  `StateCache` dropped on every rebalance (docs/adr/0085-session-worker-state-path.md);
- apply the session semantics of `features.session` (event-time sessions, allowed
  lateness, duplicates by event_id ignored);
- write the changed users' `user_session_fv` rows (and their `user_longterm_fv` rows, so
  the batch view's totals are fresh between backfills) to the online store, one write per
  view per batch, then publish one `FeaturesChanged` per changed user, then store the new
  states in the table and wait for their changelog messages before the batch is acked;
- count accepted / duplicate / too-late / dead-lettered events in Redis (`stats_key`).

Item genres come from catalog.items, read at start and followed (`features.catalog`).

Failure policy: a malformed message goes to dead.letters with the reason and the agent goes
on. Duplicates and events older than the allowed lateness are dropped and counted. A
failure of the online store or of a changelog message raises (the worker stops before acking
the batch, so the batch is redelivered after a restart; the table's dedup makes the
redelivery harmless; the state cache is dropped, its states may hold the batch's events).
Delivery: at least once into the table and the store (the store is written before the
table, so a batch cut short is redone from the old state and writes the same features);
effectively once in the features, because every accepted event id is remembered until it is
older than the allowed lateness.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import faust
import redis.asyncio as aioredis
from confluent_kafka import Producer

from streamrec.features.catalog import CatalogGenres
from streamrec.features.online_writer import OnlineWriter
from streamrec.features.session import Outcome, SessionState, apply_event, ts_ms
from streamrec.infra.settings import FeatureSettings, Settings
from streamrec.processors.batch_context import DurableTable, as_current, durable_table
from streamrec.processors.state_cache import StateCache
from streamrec.streams import metrics, rebalance_guard
from streamrec.streams.app import create_app, faust_topic
from streamrec.streams.dead_letters import FaustDeadLetters
from streamrec.streams.decoding import AgentDecoder
from streamrec.streams.producer import flush, latency_producer, produce_event
from streamrec.topics import EVENTS_INTERACTIONS, FEATURES_CHANGED, FeaturesChanged, Interaction

NAME = "session-features"
VIEW = "user_session_fv"
LONGTERM_VIEW = "user_longterm_fv"
TABLE = "user-session"


def stats_key(group: str) -> str:
    """Redis hash of this group's counts: accepted, duplicate, too_late, dead, batches."""
    return f"streamrec:features:stats:{group}"


def session_row(user_id: str, state: SessionState) -> dict[str, Any]:
    return {"user_id": user_id, **state.features(), "event_timestamp": state.max_ts}


def longterm_row(user_id: str, state: SessionState, top_n: int) -> dict[str, Any]:
    return {"user_id": user_id, **state.longterm_features(top_n), "event_timestamp": state.max_ts}


class StateTable(Protocol):
    """The users' stored states (a Faust table in the worker)."""

    def read(self, event: Any, key: bytes) -> bytes | None:
        """The stored state of `key`, read for `event` (whose partition owns it)."""
        ...

    async def write(self, states: Mapping[bytes, tuple[int, bytes]]) -> None:
        """Store the new states (key -> (partition, bytes)) durably, with every notice
        published before: the batch is acked after this returns."""
        ...


class FeatureStore(Protocol):
    """The online store's batch write (features.online_writer.OnlineWriter)."""

    def write_many_async(
        self, rows: Mapping[str, Sequence[dict[str, Any]]], *, check_stored: bool = ...
    ) -> Awaitable[Any]: ...


class SessionFeaturesProcessor:
    """One batch of events.interactions in: the changed users' features written, their
    notices published and their new states stored, in that order; returns the batch's counts
    (accepted, duplicate, too_late, dead)."""

    def __init__(
        self,
        cfg: FeatureSettings,
        decode: AgentDecoder[Interaction],
        table: StateTable,
        store: FeatureStore,
        publish: Callable[[FeaturesChanged], None],
        genres: Callable[[str], tuple[str, ...]],
        cache: StateCache[SessionState],
    ) -> None:
        self.cfg = cfg
        self.decode = decode
        self.table = table
        self.store = store
        self.publish = publish
        self.genres = genres
        self.cache = cache

    async def handle(self, batch: Sequence[Any]) -> dict[str, int]:
        try:
            return await self._handle(batch)
        except BaseException:
            # States of the batch were changed in place and may not be in the table.
            self.cache.invalidate()
            raise

    async def _handle(self, batch: Sequence[Any]) -> dict[str, int]:
        cfg, cache = self.cfg, self.cache
        epoch = cache.epoch
        counts = {o.value: 0 for o in Outcome} | {"dead": 0}
        states: dict[bytes, SessionState] = {}  # every user of the batch, by table key
        changed: dict[bytes, tuple[str, int]] = {}  # accepted: key -> (user, partition)
        for event in batch:
            interaction = await self.decode(event)
            if interaction is None:
                counts["dead"] += 1
                continue
            user = interaction.user_id
            key = user.encode()
            state = states.get(key)
            if state is None:
                state = cache.get(key)
                if state is None:
                    state = SessionState.from_bytes(self.table.read(event, key))
                states[key] = state
            outcome = apply_event(
                state,
                cfg,
                event_id=interaction.event_id,
                ts=ts_ms(interaction.ts.timestamp()),
                item_id=interaction.item_id,
                genres=self.genres(interaction.item_id),
                rating=interaction.rating,
            )
            counts[outcome.value] += 1
            if outcome is Outcome.ACCEPTED:
                changed[key] = (user, event.message.partition)
        if changed:
            rows = [(user, states[key]) for key, (user, _p) in changed.items()]
            # The online store first, the table (changelog) second: a worker stopped in
            # between leaves the old state in the changelog, and whoever redoes the batch
            # writes the same features again. The other order could leave the store
            # behind a state that already counts the batch's events as seen.
            await self.store.write_many_async(
                {
                    VIEW: [session_row(u, s) for u, s in rows],
                    LONGTERM_VIEW: [longterm_row(u, s, cfg.top_genres) for u, s in rows],
                },
                # This worker owns these users (their partitions) and writes their newest
                # state: no need to read the stored timestamps first (one round trip).
                check_stored=False,
            )
            for user, state in rows:
                self.publish(
                    FeaturesChanged(
                        user_id=user,
                        interactions=state.total,
                        last_event_ts=state.max_ts / 1000.0,
                    )
                )
            await self.table.write(
                {
                    key: (partition, states[key].to_bytes())
                    for key, (_u, partition) in changed.items()
                }
            )
        # Every state of the batch is now the table's own (read from it, or written above).
        cache.put_many(states, epoch)
        return counts


class _FaustStates:
    """`StateTable` over a `DurableTable`, its changelog written through `producer`."""

    def __init__(self, table: DurableTable, producer: Producer) -> None:
        self.table = table
        self.producer = producer

    def read(self, event: Any, key: bytes) -> bytes | None:
        with as_current(event):
            return self.table.get(key)

    async def write(self, states: Mapping[bytes, tuple[int, bytes]]) -> None:
        for key, (partition, value) in states.items():
            self.table.put(self.producer, partition, key, value)
        self.producer.poll(0)
        # Acked (then committed) only once the new states are in the changelog and the
        # notices (same producer) are delivered.
        await asyncio.to_thread(flush, self.producer, 60.0)
        self.table.persist()


def build(settings: Settings, group: str | None = None) -> faust.App:
    group = group or f"streamrec-{NAME}"
    cfg = settings.features
    # Finish the events already taken before a rebalance hands partitions over.
    overrides: dict[str, Any] = {"stream_wait_empty": True}
    if cfg.instance:
        # Two workers of one group on one machine need separate local stores (RocksDB locks).
        datadir = settings.state_dir / "faust" / f"{group}-{cfg.instance}"
        datadir.mkdir(parents=True, exist_ok=True)
        overrides["datadir"] = str(datadir)
    app = create_app(settings, group, **overrides)
    # Redelivered events are harmless here (dedup by event id), so a stalled partition may
    # be re-sought (streams.rebalance_guard; faust #175).
    rebalance_guard.watch_stalls(app, cfg.stall_s)
    metrics.attach(app, settings, NAME)
    source = faust_topic(app, EVENTS_INTERACTIONS)
    changed_topic = faust_topic(app, FEATURES_CHANGED)
    table = durable_table(
        app,
        TABLE,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=EVENTS_INTERACTIONS.partitions,
        help="per-user SessionState (features.session), JSON",
    )
    decode: AgentDecoder[Interaction] = AgentDecoder(
        EVENTS_INTERACTIONS, NAME, FaustDeadLetters(app)
    )
    catalog = CatalogGenres(settings)
    store = aioredis.from_url(settings.redis_url)
    stats = stats_key(group)
    # FeaturesChanged notices and the table's changelog go through librdkafka, not faust's
    # producer: faust's send path costs tens of microseconds of Python per message, and both
    # are one message per changed user per batch (ADR 0027, ADR 0085). murmur2 is the
    # partitioner faust (aiokafka) used for the notices, so their keys stay put.
    producer = latency_producer(settings, **{"linger.ms": 2, "partitioner": "murmur2_random"})
    # Decoded states of the owned partitions, dropped on every rebalance (ADR 0085).
    cache: StateCache[SessionState] = StateCache(cfg.state_cache_max)
    cache.attach(app)
    held: dict[str, SessionFeaturesProcessor] = {}

    async def start() -> SessionFeaturesProcessor:
        await asyncio.to_thread(catalog.load)
        catalog.start_following()
        writer = await asyncio.to_thread(OnlineWriter, settings)
        await changed_topic.maybe_declare()
        return SessionFeaturesProcessor(
            cfg,
            decode,
            _FaustStates(table, producer),
            writer,
            lambda notice: produce_event(producer, FEATURES_CHANGED, notice),
            catalog.get,
            cache,
        )

    @app.agent(source, name=NAME)
    async def session_features(stream: faust.StreamT) -> None:
        if "p" not in held:
            held["p"] = await start()
        processor = held["p"]
        processed = metrics.EVENTS_PROCESSED.labels(NAME, EVENTS_INTERACTIONS.name)
        latency = metrics.PROCESSING_SECONDS.labels(NAME)
        async for batch in stream.take_events(cfg.batch_max, within=cfg.batch_ms / 1000):
            t0 = time.perf_counter()
            counts = await processor.handle(batch)
            async with store.pipeline(transaction=False) as pipe:
                for name, n in counts.items():
                    if n:
                        pipe.hincrby(stats, name, n)
                pipe.hincrby(stats, "batches", 1)
                await pipe.execute()
            processed.inc(len(batch) - counts["dead"])
            latency.observe(time.perf_counter() - t0)

    @app.on_before_shutdown.connect
    def _stop(sender: Any, **kwargs: Any) -> None:
        catalog.stop()
        producer.flush(10)

    return app
