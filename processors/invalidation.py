"""Invalidation processor: targeted, coalesced, rate-bounded refreshes instead of broadcasts.

Responsibilities (the decisions live in `invalidation/`; this module is the I/O around them):
- consume what can make precomputed results stale: catalog.items (upserts, removals),
  catalog.vectors (new or changed embeddings, tombstones), registry.changes (ranker or
  retriever promotions and rollbacks, index swaps); and what it needs to decide:
  events.interactions (users' recent items and activity) and candidates (which items each
  user's `cand:{user_id}` holds, read from Redis when a list is rewritten);
- add removed items to `catalog:removed` as soon as the removal is read, before any refresh:
  serving filters them at once;
- coalescing mode (default): every tick, hand the changed items that have been quiet for
  `window_s` to the engine in one pass, then emit `RefreshCommand`s (mode "refresh", most
  active users first) to cache.invalidations through a token bucket of
  `refresh_rate_per_s` (burst `refresh_burst`); the candidates processor recomputes and
  swaps in, the old value serving meanwhile; counters go to `stats_key(group)` in Redis;
- broadcast mode (`settings.invalidation.mode = "broadcast"`, for the benchmark only): today's
  behaviour, every affected `cand:{user_id}` deleted at once and a "delete" command sent for
  each, with no window and no bound.

Why Faust (ADR 0070): one app runs five agents plus a tick timer and an emitter task on one
event loop, so the shared in-memory state needs no locks; it is the project's worker model
(`streamrec worker invalidation`, metrics, dead letters) and aiolimiter paces the emitter.

Failure policy: a malformed message goes to dead.letters with the reason and the agent goes
on; a candidates notice whose list is not valid JSON is ignored (the list's next rewrite
corrects it). State is in memory and rebuilt at start-up from the topics, whose bounds are
then committed as the group's offsets (`invalidation.bootstrap`); refreshes still queued
when the process dies are lost, which costs freshness, never correctness (removals are in
`catalog:removed` before any refresh is queued). Run one instance per group: the state is
per process, not partitioned.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import faust

from streamrec.infra.redis_clients import async_client, sync_client
from streamrec.infra.settings import Settings
from streamrec.invalidation import bootstrap
from streamrec.invalidation.engine import Effects, Invalidator
from streamrec.invalidation.pacing import refresh_limiter
from streamrec.streams import codecs, metrics
from streamrec.streams.app import create_app, faust_topic
from streamrec.streams.dead_letters import AsyncDeadLetterSink, FaustDeadLetters
from streamrec.streams.decoding import AgentDecoder
from streamrec.streams.stop_on_failure import stop_on_failure
from streamrec.topics import (
    CACHE_INVALIDATIONS,
    CANDIDATES,
    CATALOG_ITEMS,
    CATALOG_VECTORS,
    EVENTS_INTERACTIONS,
    REGISTRY_CHANGES,
    CandidatesUpdated,
    CatalogItem,
    Interaction,
    ItemVector,
    RefreshCommand,
    RegistryChange,
    TopicSpec,
    candidate_codec,
)
from streamrec.topics.base import utcnow
from streamrec.topics.errors import SchemaError
from streamrec.topics.stores import REMOVED_ITEMS, USER_CANDIDATES, CandidateList

NAME = "invalidation"


def stats_key(group: str) -> str:
    """A hash of the processor's counters (tests, the benchmark and the demo read it)."""
    return f"streamrec:invalidation:{group}"


def stats(engine: Invalidator, sending: int = 0) -> dict[str, int]:
    c = engine.coalescer
    return {
        "dirty_items": engine.dirty,
        "pending": c.pending,
        "sweep_left": c.sweep_left,
        "passes": engine.stats.passes,
        "item_changes": engine.stats.item_changes,
        "changes": c.stats.changes,
        "coalesced": c.stats.coalesced,
        "dropped": c.stats.dropped,
        "emitted": c.stats.emitted,
        "idle": int(engine.dirty == 0 and c.pending == 0 and c.sweep_left == 0 and not sending),
    }


def candidate_lists(values: list[bytes | None]) -> list[CandidateList | None]:
    out: list[CandidateList | None] = []
    for raw in values:
        try:
            out.append(None if raw is None else candidate_codec.decode(raw))
        except SchemaError:
            out.append(None)
    return out


def rebuild_state(settings: Settings, group: str, engine: Invalidator) -> bootstrap.Applied:
    """Apply history as state (no refreshes); returns, per partition, where it stopped."""
    applied = bootstrap.bounds(settings, group)
    store = sync_client(settings)

    def interactions(msgs: list[Any]) -> None:
        events = [bootstrap.decode_or_none(EVENTS_INTERACTIONS, m.value()) for m in msgs]
        engine.on_interactions(e for e in events if isinstance(e, Interaction))

    def vectors(msgs: list[Any]) -> None:
        decoded = [(m.key(), bootstrap.decode_or_none(CATALOG_VECTORS, m.value())) for m in msgs]
        live = [(v, codecs.vector_to_numpy(v)) for _, v in decoded if isinstance(v, ItemVector)]
        gone = [k.decode() for k, v in decoded if v is None and k is not None]
        with engine.state_only():
            engine.on_vectors(live, tombstones=gone)

    def items(msgs: list[Any]) -> None:
        events = [bootstrap.decode_or_none(CATALOG_ITEMS, m.value()) for m in msgs]
        with engine.state_only():
            effects = engine.on_items(e for e in events if isinstance(e, CatalogItem))
        if effects.removed_items:
            store.sadd(REMOVED_ITEMS.key(), *effects.removed_items)
        if effects.restored_items:
            store.srem(REMOVED_ITEMS.key(), *effects.restored_items)

    def candidates(msgs: list[Any]) -> None:
        users = {m.key().decode() for m in msgs if m.key() is not None}
        keys = [USER_CANDIDATES.key(user_id=u) for u in users]
        engine.on_candidates(c for c in candidate_lists(store.mget(keys)) if c is not None)

    try:
        bootstrap.read_until(settings, CATALOG_VECTORS, applied, vectors)
        bootstrap.read_until(settings, EVENTS_INTERACTIONS, applied, interactions)
        bootstrap.read_until(settings, CATALOG_ITEMS, applied, items)
        bootstrap.read_until(settings, CANDIDATES, applied, candidates)
    finally:
        store.close()
    bootstrap.commit(settings, group, applied)
    return applied


class Store(Protocol):
    """The Redis commands the processor sends (redis.asyncio.Redis)."""

    def sadd(self, name: str, *values: str) -> Awaitable[Any]: ...

    def srem(self, name: str, *values: str) -> Awaitable[Any]: ...

    def delete(self, *names: str) -> Awaitable[Any]: ...

    def mget(self, keys: list[str]) -> Awaitable[list[bytes | None]]: ...

    def hset(self, name: str, *, mapping: Mapping[str, int]) -> Awaitable[Any]: ...


class Limiter(Protocol):
    """The refresh rate bound (`invalidation.pacing.refresh_limiter`)."""

    async def acquire(self) -> None: ...


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


class InvalidationProcessor:
    """What each input topic's batch does to the engine's state and to Redis, the tick that
    closes windows, and the paced emission of the queued refreshes.

    `applied` is where the start-up state stopped, per (topic, partition): events below it
    are already in the engine and are skipped. `send` publishes a command to
    cache.invalidations; `now` stamps each refresh as it leaves (the engine keeps its own
    monotonic clock for windows)."""

    def __init__(
        self,
        engine: Invalidator,
        store: Store,
        send: Callable[[RefreshCommand], Awaitable[None]],
        limiter: Limiter,
        dead_letters: AsyncDeadLetterSink,
        stats_key: str,
        applied: Mapping[tuple[str, int], int] | None = None,
        now: Callable[[], datetime] = utcnow,
        pending_gauge: Gauge | None = None,
        sweep_gauge: Gauge | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.send = send
        self.limiter = limiter
        self.stats_key = stats_key
        self.applied: Mapping[tuple[str, int], int] = {} if applied is None else applied
        self.now = now
        self.decoders: dict[str, AgentDecoder[Any]] = {
            spec.name: AgentDecoder(spec, NAME, dead_letters)
            for spec in (
                CATALOG_ITEMS,
                CATALOG_VECTORS,
                EVENTS_INTERACTIONS,
                CANDIDATES,
                REGISTRY_CHANGES,
            )
        }
        self.sending = 0  # a command popped but not yet handed to the producer
        self.wake = asyncio.Event()  # set when refreshes were queued: the emitter looks now
        self._pending_gauge = pending_gauge or metrics.QUEUE_DEPTH.labels(NAME, "pending")
        self._sweep_gauge = sweep_gauge or metrics.QUEUE_DEPTH.labels(NAME, "sweep")

    def unseen(self, batch: Sequence[Any]) -> list[Any]:
        """The events the start-up state does not hold yet (it holds everything below)."""
        applied = self.applied
        return [
            e
            for e in batch
            if e.message.offset >= applied.get((e.message.topic, e.message.partition), 0)
        ]

    async def _decode(self, spec: TopicSpec, batch: Sequence[Any]) -> list[Any]:
        decoded = await self.decoders[spec.name].decode_all(self.unseen(batch))
        metrics.EVENTS_PROCESSED.labels(NAME, spec.name).inc(len(decoded))
        return [event for _, event in decoded]

    async def apply(self, effects: Effects) -> None:
        store = self.store
        # Removals first: from here on serving filters the item, whatever the refreshes do.
        if effects.removed_items:
            await store.sadd(REMOVED_ITEMS.key(), *effects.removed_items)
        if effects.restored_items:  # an upsert brings a removed item back
            await store.srem(REMOVED_ITEMS.key(), *effects.restored_items)
        if effects.deletions:  # broadcast mode: everything affected, at once
            keys = [USER_CANDIDATES.key(user_id=c.user_id) for c in effects.deletions]
            await store.delete(*keys)
            for command in effects.deletions:
                await self.send(command)
        if effects.queued:
            self.wake.set()

    async def on_items(self, batch: Sequence[Any]) -> None:
        items = await self._decode(CATALOG_ITEMS, batch)
        await self.apply(self.engine.on_items(e for e in items if isinstance(e, CatalogItem)))

    async def on_vectors(self, batch: Sequence[Any]) -> None:
        vectors: list[tuple[ItemVector, Any]] = []
        gone: list[str] = []
        for event in self.unseen(batch):
            if event.value is None:  # tombstone: the item is gone
                if event.key is not None:
                    gone.append(event.key.decode())
                continue
            vector = await self.decoders[CATALOG_VECTORS.name](event)
            if vector is None:
                continue
            vectors.append((vector, codecs.vector_to_numpy(vector)))
        metrics.EVENTS_PROCESSED.labels(NAME, CATALOG_VECTORS.name).inc(len(vectors) + len(gone))
        await self.apply(self.engine.on_vectors(vectors, tombstones=gone))

    async def on_interactions(self, batch: Sequence[Any]) -> None:
        events = await self._decode(EVENTS_INTERACTIONS, batch)
        self.engine.on_interactions(e for e in events if isinstance(e, Interaction))

    async def on_candidates(self, batch: Sequence[Any]) -> None:
        notices = [
            n for n in await self._decode(CANDIDATES, batch) if isinstance(n, CandidatesUpdated)
        ]
        if not notices:
            return
        keys = [USER_CANDIDATES.key(user_id=n.user_id) for n in notices]
        lists = candidate_lists(await self.store.mget(keys))
        self.engine.on_candidates(c for c in lists if c is not None)
        self.engine.on_candidates_gone(n for n, c in zip(notices, lists, strict=True) if c is None)

    async def on_registry(self, batch: Sequence[Any]) -> None:
        for change in await self._decode(REGISTRY_CHANGES, batch):
            if isinstance(change, RegistryChange):
                await self.apply(self.engine.on_registry(change))

    async def tick(self) -> int:
        """Close the quiet items' windows (one pass), then publish the counters; returns
        the keys queued."""
        engine = self.engine
        queued = engine.tick()
        if queued:
            self.wake.set()
        self._pending_gauge.set(engine.coalescer.pending)
        self._sweep_gauge.set(engine.coalescer.sweep_left)
        await self.store.hset(self.stats_key, mapping=stats(engine, self.sending))
        return queued

    async def send_next(self) -> bool:
        """Send the next queued refresh once the rate bound allows; False when none."""
        command = self.engine.next_command()
        if command is None:
            return False
        self.sending = 1
        await self.limiter.acquire()
        await self.send(command.model_copy(update={"issued_at": self.now()}))
        self.sending = 0
        return True

    async def emit(self) -> None:
        """Send refreshes until cancelled, waiting for a wake-up while none is queued."""
        while True:
            if await self.send_next():
                continue
            self.wake.clear()
            # Woken by a closed window or a promotion; the timeout is a safety net.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.engine.cfg.window_s)


def build(settings: Settings, group: str | None = None) -> faust.App:
    group = group or f"streamrec-{NAME}"
    cfg = settings.invalidation
    app = create_app(settings, group)
    metrics.attach(app, settings, NAME)
    engine = Invalidator(cfg)
    applied = rebuild_state(settings, group, engine)
    out = faust_topic(app, CACHE_INVALIDATIONS)

    async def send(command: RefreshCommand) -> None:
        await out.send(
            key=CACHE_INVALIDATIONS.key_of(command),
            value=codecs.encode(CACHE_INVALIDATIONS, command),
        )

    processor = InvalidationProcessor(
        engine,
        async_client(settings),
        send,
        refresh_limiter(cfg),
        FaustDeadLetters(app),
        stats_key(group),
        applied,
    )

    @app.agent(faust_topic(app, CATALOG_ITEMS), name=f"{NAME}-items")
    async def items(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(1000, within=0.05):
            with stop_on_failure(NAME):
                await processor.on_items(batch)

    @app.agent(faust_topic(app, CATALOG_VECTORS), name=f"{NAME}-vectors")
    async def vectors(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(1000, within=0.05):
            with stop_on_failure(NAME):
                await processor.on_vectors(batch)

    @app.agent(faust_topic(app, EVENTS_INTERACTIONS), name=f"{NAME}-interactions")
    async def interactions(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(2000, within=0.1):
            with stop_on_failure(NAME):
                await processor.on_interactions(batch)

    @app.agent(faust_topic(app, CANDIDATES), name=f"{NAME}-candidates")
    async def candidates(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(1000, within=0.1):
            with stop_on_failure(NAME):
                await processor.on_candidates(batch)

    @app.agent(faust_topic(app, REGISTRY_CHANGES), name=f"{NAME}-registry")
    async def registry(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(100, within=0.1):
            with stop_on_failure(NAME):
                await processor.on_registry(batch)

    @app.timer(min(0.25, cfg.window_s / 2))
    async def tick() -> None:
        await processor.tick()

    @app.task
    async def emitter() -> None:
        await processor.emit()

    return app
