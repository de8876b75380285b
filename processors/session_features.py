"""Session features processor: events.interactions -> user session features in Feast (Redis).

Responsibilities:
- consume events.interactions (keyed by user) in micro-batches bounded by size and time
  (`features.batch_max` events, `features.batch_ms` ms), and work on the batch, not the
  message (docs/adr/0121-session-worker-batch-path.md): the batch's values are decoded in
  one go (`streams.columnar.decode_interaction_rows`: orjson and a columnar check; what it
  does not vouch for goes through the schema one by one and, if refused, to dead.letters
  with its reason);
- keep each user's `SessionState` in a Faust table backed by its changelog topic (local
  store: RocksDB through rocksdict), so a restarted or moved worker recovers it; a batch
  reads each user's state once and writes it once, with `DurableTable.put_many` (one
  produce call for the changelog through librdkafka, the local store after the flush, not
  faust's per-key path), and the decoded states of the owned partitions stay in a
  `StateCache` dropped on every rebalance (docs/adr/0085-session-worker-state-path.md);
- apply the session semantics of `features.session` (event-time sessions, allowed
  lateness, duplicates by event_id ignored), event by event in the batch's order;
- write the changed users' `user_session_fv` rows (and their `user_longterm_fv` rows, so
  the batch view's totals are fresh between backfills) to the online store, one Redis
  pipeline for both views per batch, then publish one `FeaturesChanged` per changed user
  (one produce call), then store the new states in the table and wait for their changelog
  messages before the batch is acked;
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
import gc
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import faust
import orjson
from confluent_kafka import Producer

from streamrec.features.catalog import CatalogGenres
from streamrec.features.online_writer import OnlineWriter
from streamrec.features.session import (
    Outcome,
    SessionState,
    apply_event,
    genre_weights,
    is_redelivery,
)
from streamrec.infra.redis_clients import async_client
from streamrec.infra.settings import FeatureSettings, Settings
from streamrec.processors.batch_context import DurableTable, as_current, durable_table
from streamrec.processors.state_cache import StateCache
from streamrec.streams import metrics, rebalance_guard
from streamrec.streams.app import create_app, faust_topic, partitions_for
from streamrec.streams.columnar import decode_interaction_rows, interaction_row
from streamrec.streams.dead_letters import FaustDeadLetters
from streamrec.streams.decoding import AgentDecoder
from streamrec.streams.producer import flush, latency_producer, produce_many
from streamrec.streams.stop_on_failure import stop_on_failure
from streamrec.streams.whole_batch import whole_batch
from streamrec.topics import EVENTS_INTERACTIONS, FEATURES_CHANGED, FeaturesChanged, Interaction
from streamrec.topics.base import utcnow

NAME = "session-features"
VIEW = "user_session_fv"
LONGTERM_VIEW = "user_longterm_fv"
TABLE = "user-session"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WEIGHTS_MAX = 200_000  # items whose genre weights are kept between batches


def stats_key(group: str) -> str:
    """Redis hash of this group's counts: accepted, duplicate, too_late, dead, batches."""
    return f"streamrec:features:stats:{group}"


def session_row(user_id: str, state: SessionState) -> dict[str, Any]:
    return {"user_id": user_id, **state.features(), "event_timestamp": state.max_ts}


def longterm_row(user_id: str, state: SessionState, top_n: int) -> dict[str, Any]:
    return {"user_id": user_id, **state.longterm_features(top_n), "event_timestamp": state.max_ts}


# The notice's fields in the order pydantic-core writes them (`notice_messages` writes the
# same bytes; the unit tests compare them).
assert tuple(FeaturesChanged.model_fields) == (
    "schema_version",
    "user_id",
    "interactions",
    "last_event_ts",
    "changed_at",
), "FeaturesChanged's fields changed; update notice_messages"


def notice_messages(
    rows: Sequence[tuple[str, SessionState]], now: datetime
) -> list[dict[str, bytes]]:
    """The `FeaturesChanged` notices of a batch's changed users, as messages for one
    produce call: key and value the bytes `codecs.encode` writes for the notice, built with
    orjson from values that are valid by construction (validated events, their states)."""
    dumps, utc_z = orjson.dumps, orjson.OPT_UTC_Z
    return [
        {
            "key": user.encode(),
            "value": dumps(
                {
                    "schema_version": 1,
                    "user_id": user,
                    "interactions": state.total,
                    "last_event_ts": _EPOCH + timedelta(milliseconds=state.max_ts),
                    "changed_at": now,
                },
                option=utc_z,
            ),
        }
        for user, state in rows
    ]


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
        publish: Callable[[list[dict[str, bytes]]], None],
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
        # item -> its genre weights (`features.session.genre_weights`), bounded.
        self._weights: dict[str, list[tuple[int, float]]] = {}

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
        counts = {o.value: 0 for o in Outcome} | {"dead": 0, "redelivered": 0}
        # The batch decoded in one go; what the columnar check does not vouch for goes
        # through the schema one by one, in order (dead-lettered with its reason).
        rows, by_schema = decode_interaction_rows([event.value for event in batch])
        for i in by_schema:
            interaction = await self.decode(batch[i])
            if interaction is not None:
                rows[i] = interaction_row(interaction)
        states: dict[bytes, SessionState] = {}  # every user of the batch, by table key
        changed: dict[bytes, tuple[str, int]] = {}  # accepted: key -> (user, partition)
        weights = self._weights
        accepted = Outcome.ACCEPTED
        # In the batch's order: event-time semantics depend on it only through lateness
        # and ties, exactly as one event at a time.
        for event, row in zip(batch, rows, strict=True):
            if row is None:
                counts["dead"] += 1
                continue
            event_id, user, item, rating, ts = row
            key = user.encode()
            state = states.get(key)
            if state is None:  # one state read per user and batch
                state = cache.get(key)
                if state is None:
                    state = SessionState.from_bytes(self.table.read(event, key))
                states[key] = state
            message = event.message
            if is_redelivery(state, message.partition, message.offset):
                # Applied before a restart or a rebalance (the state holds it): counted as
                # a redelivery, not as a duplicate or as late data.
                counts["redelivered"] += 1
                continue
            w = weights.get(item)
            if w is None:
                if len(weights) > _WEIGHTS_MAX:
                    weights.clear()
                w = weights[item] = genre_weights(self.genres(item))
            outcome = apply_event(
                state, cfg, event_id=event_id, ts=ts, item_id=item, weights=w, rating=rating
            )
            counts[outcome.value] += 1
            if outcome is accepted:
                state.applied = [message.partition, message.offset]
                changed[key] = (user, message.partition)
        if changed:
            rows_out = [(user, states[key]) for key, (user, _p) in changed.items()]
            # The online store first, the table (changelog) second: a worker stopped in
            # between leaves the old state in the changelog, and whoever redoes the batch
            # writes the same features again. The other order could leave the store
            # behind a state that already counts the batch's events as seen.
            await self.store.write_many_async(
                {
                    VIEW: [session_row(u, s) for u, s in rows_out],
                    LONGTERM_VIEW: [longterm_row(u, s, cfg.top_genres) for u, s in rows_out],
                },
                # This worker owns these users (their partitions) and writes their newest
                # state: no need to read the stored timestamps first (one round trip).
                check_stored=False,
            )
            self.publish(notice_messages(rows_out, utcnow()))  # one produce call
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
        self.table.put_many(self.producer, states)
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
        partitions=partitions_for(app, EVENTS_INTERACTIONS),
        help="per-user SessionState (features.session), JSON",
    )
    decode: AgentDecoder[Interaction] = AgentDecoder(
        EVENTS_INTERACTIONS, NAME, FaustDeadLetters(app)
    )
    catalog = CatalogGenres(settings)
    store = async_client(settings)
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
        if cfg.gc_threshold:
            # The cached states and faust's per-message objects made Python's cyclic GC
            # (gen-0 threshold 700) about half of a batch's own CPU: what start-up built is
            # frozen out of the collections, and young objects are collected less often.
            gc.freeze()
            gc.set_threshold(cfg.gc_threshold, *gc.get_threshold()[1:])
        return SessionFeaturesProcessor(
            cfg,
            decode,
            _FaustStates(table, producer),
            writer,
            lambda notices: produce_many(producer, FEATURES_CHANGED.name, notices),
            catalog.get,
            cache,
        )

    @app.agent(source, name=NAME)
    async def session_features(stream: faust.StreamT) -> None:
        if "p" not in held:
            held["p"] = await start()
        processor = held["p"]
        processed = metrics.EVENTS_PROCESSED.labels(NAME, EVENTS_INTERACTIONS.name)
        redelivered = metrics.REDELIVERED.labels(NAME, EVENTS_INTERACTIONS.name)
        latency = metrics.PROCESSING_SECONDS.labels(NAME)

        async def handle_and_count(batch: Sequence[Any]) -> dict[str, int]:
            counts = await processor.handle(batch)
            async with store.pipeline(transaction=False) as pipe:
                for name, n in counts.items():
                    if n:
                        pipe.hincrby(stats, name, n)
                pipe.hincrby(stats, "batches", 1)
                await pipe.execute()
            return counts

        async for batch in stream.take_events(cfg.batch_max, within=cfg.batch_ms / 1000):
            t0 = time.perf_counter()
            with stop_on_failure(NAME):  # a failed batch is redone, never acked
                # A stop mid-batch waits for its counts (streams.whole_batch).
                counts = await whole_batch(handle_and_count(batch))
            processed.inc(len(batch) - counts["dead"] - counts["redelivered"])
            if counts["redelivered"]:
                redelivered.inc(counts["redelivered"])
            latency.observe(time.perf_counter() - t0)

    @app.on_before_shutdown.connect
    def _stop(sender: Any, **kwargs: Any) -> None:
        catalog.stop()
        producer.flush(10)

    return app
