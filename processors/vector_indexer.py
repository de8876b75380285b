"""Vector indexer: catalog.vectors in, versioned FAISS index snapshots out.

Responsibilities:
- read every partition of the compacted catalog.vectors from the beginning at each start
  (assigned, not a consumer group: an index needs all items, and the compacted topic *is*
  its durable state, so a restart rebuilds the same index; ADR 0012);
- apply upserts (latest vector per item) and tombstones (removal) to a `VectorTable`;
- publish a snapshot (`vectors.SnapshotStore`: built, validated, promoted atomically) once
  the startup backlog is read and the stream has been quiet for `index.snapshot_quiet_s`,
  or every `index.snapshot_interval_s` under a steady stream of changes; an unchanged
  rebuild (same content digest as the promoted snapshot) publishes nothing;
- announce each promotion on registry.changes (for the invalidation processor).

`VectorIndexer` (the table and the snapshot timing) and `IndexerLoop` (the consume loop)
work over ports: the topic reader, the snapshot store, the registry-change outbox, the
dead-letter sink, the status board and the clock; `open_loop` and `build` wire the real
ones (TopicReader, SnapshotStore, a librdkafka producer, Redis).

Failure policy: a malformed message (no key, not a vector, key and item id disagree, wrong
dimension) goes to dead.letters with the reason and is skipped. A snapshot that fails
validation is not published (readers keep the previous one), logged, and retried at the
next change. A broker failure stops the worker, which rebuilds from the topic on restart.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import faust
import redis
from confluent_kafka import Producer

from streamrec.infra.redis_clients import sync_client
from streamrec.infra.settings import IndexSettings, Settings
from streamrec.models.registry import ModelVersion
from streamrec.streams import codecs, metrics
from streamrec.streams.app import create_app
from streamrec.streams.dead_letters import DeadLetterSink, ProducerDeadLetters
from streamrec.streams.decoding import Count, Decoder
from streamrec.streams.producer import latency_producer, produce_event
from streamrec.streams.table_reader import TopicReader
from streamrec.topics import CATALOG_VECTORS, REGISTRY_CHANGES, ItemVector, RegistryChange
from streamrec.topics.errors import SchemaError
from streamrec.vectors import (
    SnapshotInfo,
    SnapshotRejected,
    SnapshotStore,
    VectorIndexError,
    VectorTable,
)

NAME = "vector-indexer"
log = logging.getLogger(__name__)


def status_key(group: str) -> str:
    """Redis hash of an indexer's state: items, caught_up, last outcome, index version."""
    return f"streamrec:indexer:{group}"


class Snapshots(Protocol):
    """Where snapshots are published (`vectors.SnapshotStore`)."""

    def promoted(self) -> ModelVersion | None: ...

    def publish(self, table: VectorTable, model_version: str) -> SnapshotInfo:
        """Build, validate and promote; raises `SnapshotRejected` when validation fails."""
        ...


class VectorSource(Protocol):
    """catalog.vectors read from its beginning and followed (`streams.TopicReader`)."""

    @property
    def bounds(self) -> Mapping[int, int]: ...

    @property
    def caught_up(self) -> bool:
        """Every partition has been read up to the end offsets taken at start."""
        ...

    def poll(self, max_messages: int = ..., timeout_s: float = ...) -> list[Any]:
        """Messages with `key()` and `value()` (confluent-kafka `Message`s)."""
        ...

    def close(self) -> None: ...


class RegistryChanges(Protocol):
    """registry.changes, through the producer the dead letters share (`ProducerChanges`)."""

    def send(self, change: RegistryChange) -> None: ...

    def poll(self) -> None:
        """Serve delivery callbacks without waiting."""
        ...

    def flush(self, timeout_s: float) -> None: ...


class StatusBoard(Protocol):
    """The indexer's status hash (`RedisStatus`); `write` may raise `redis.RedisError`."""

    def reset(self) -> None: ...

    def write(self, fields: Mapping[str, str | int]) -> None: ...


class ProducerChanges:
    """`RegistryChanges` over a librdkafka producer (flushing it flushes the letters too)."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def send(self, change: RegistryChange) -> None:
        produce_event(self.producer, REGISTRY_CHANGES, change)

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout_s: float) -> None:
        self.producer.flush(timeout_s)


class RedisStatus:
    """`StatusBoard` over one Redis hash."""

    def __init__(self, store: redis.Redis, key: str) -> None:
        self.store = store
        self.key = key

    def reset(self) -> None:
        self.store.delete(self.key)

    def write(self, fields: Mapping[str, str | int]) -> None:
        self.store.hset(self.key, mapping=dict(fields))


class VectorIndexer:
    """Applies catalog.vectors messages to a table and decides when to snapshot."""

    def __init__(
        self,
        cfg: IndexSettings,
        snapshots: Snapshots,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.snapshots = snapshots
        self.clock = clock
        self.table = VectorTable()
        self.model_of: dict[str, str] = {}
        self.dirty = False
        self.caught_up = False
        self.last_change = clock()
        self.last_snapshot = clock()
        self.applied = 0
        self.published: list[SnapshotInfo] = []

    def apply(self, key: bytes | None, value: bytes | None) -> str | None:
        """Apply one message; returns the reason when it is malformed (and changes nothing)."""
        if not key:
            return "catalog.vectors message without a key (item id)"
        item_id = key.decode("utf-8", errors="replace")
        if value is None:
            if self.table.remove(item_id):
                self.model_of.pop(item_id, None)
                self._changed()
            return None
        try:
            event = codecs.decode_vector(value)
        except SchemaError as exc:
            return exc.reason
        if event.item_id != item_id:
            return f"key {item_id!r} differs from the vector's item id {event.item_id!r}"
        try:
            self.table.upsert(item_id, codecs.vector_to_numpy(event))
        except VectorIndexError as exc:
            return str(exc)
        self.model_of[item_id] = event.model_version
        self._changed()
        return None

    def _changed(self) -> None:
        self.applied += 1
        self.dirty = True
        self.last_change = self.clock()

    def model_version(self) -> str:
        """The model most vectors come from (several only while a model change rolls out)."""
        counts = Counter(self.model_of.values())
        return counts.most_common(1)[0][0] if counts else ""

    def due(self, now: float) -> bool:
        if not (self.dirty and self.caught_up):
            return False
        quiet = now - self.last_change >= self.cfg.snapshot_quiet_s
        return quiet or now - self.last_snapshot >= self.cfg.snapshot_interval_s

    def snapshot(self) -> SnapshotInfo | None:
        """Publish a snapshot of the table; None when it equals the promoted one."""
        self.dirty = False
        self.last_snapshot = self.clock()
        current = self.snapshots.promoted()
        digest = self.table.digest()
        if current is not None and current.manifest.model_dump().get("content_digest") == digest:
            return None
        published = self.snapshots.publish(self.table, self.model_version())
        self.published.append(published)
        return published


class IndexerLoop:
    """The blocking consume loop over its ports; `run(stop)` in a thread of the worker."""

    def __init__(
        self,
        indexer: VectorIndexer,
        reader: VectorSource,
        changes: RegistryChanges,
        dead_letters: DeadLetterSink,
        status: StatusBoard,
        *,
        failed: Count | None = None,
    ) -> None:
        self.indexer = indexer
        self.reader = reader
        self.changes = changes
        self.status = status
        # `apply` decodes and checks; this step dead-letters and counts what it refused.
        self.rejects: Decoder[ItemVector] = Decoder(
            CATALOG_VECTORS, NAME, dead_letters, failed=failed
        )

    def report(self, outcome: str) -> None:
        """Best effort: the status hash is for people and tests, never worth stopping for."""
        try:
            self.status.write(
                {
                    "outcome": outcome,
                    "items": len(self.indexer.table),
                    "applied": self.indexer.applied,
                    "caught_up": int(self.indexer.caught_up),
                }
            )
        except redis.RedisError as exc:
            log.warning("indexer status not written: %s", exc)

    def run(self, stop: threading.Event) -> None:
        """Rebuild from the topic, then follow it until `stop`; closes the reader and
        flushes the producer whatever happens."""
        try:
            topic = CATALOG_VECTORS.name
            log.info("indexer: rebuilding from %s up to %s", topic, self.reader.bounds)
            self.status.reset()
            self.report("rebuilding")
            while not stop.is_set():
                self.step()
        finally:
            self.changes.flush(10)
            self.reader.close()

    def step(self) -> None:
        """One poll: apply what came, then publish a snapshot if one is due."""
        indexer = self.indexer
        for msg in self.reader.poll(2000, timeout_s=0.2):
            reason = indexer.apply(msg.key(), msg.value())
            if reason:
                self.rejects.reject(msg, reason)
        self.changes.poll()
        if not indexer.caught_up:
            indexer.caught_up = self.reader.caught_up
            if indexer.caught_up and not indexer.table:
                indexer.dirty = True  # an empty topic still gets an index
        if indexer.due(indexer.clock()):
            self._snapshot()

    def _snapshot(self) -> None:
        try:
            published = self.indexer.snapshot()
        except SnapshotRejected as exc:
            log.error("index snapshot rejected, not published: %s", exc)
            self.report(f"rejected: {exc}")
            return
        if published is None:
            log.info("index unchanged (%d items), nothing published", len(self.indexer.table))
            self.report("unchanged")
            return
        log.info("index %s published: %d items", published.version, published.item_count)
        self.report(f"published {published.version}")
        self.changes.send(
            RegistryChange(kind="index", name="index", version=published.version, action="promote")
        )


def open_loop(
    settings: Settings, indexer: VectorIndexer, status: StatusBoard, group: str
) -> IndexerLoop:
    """The loop over a fresh reader and producer; the end offsets are taken now."""
    # Every partition, assigned from the beginning; it never joins or commits the group.
    reader = TopicReader(
        settings.kafka_config(),
        CATALOG_VECTORS,
        group=f"{group}-reader",
        timeout_s=30.0,
        raise_on_error=True,
    )
    producer = latency_producer(settings)
    return IndexerLoop(
        indexer, reader, ProducerChanges(producer), ProducerDeadLetters(producer), status
    )


def build(settings: Settings, group: str | None = None) -> faust.App:
    group = group or f"streamrec-{NAME}"
    app = create_app(settings, group)
    metrics.attach(app, settings, NAME)
    indexer = VectorIndexer(settings.index, SnapshotStore(settings))
    status = RedisStatus(sync_client(settings), status_key(group))
    failure: list[BaseException] = []

    def run(stop: threading.Event) -> None:
        try:
            open_loop(settings, indexer, status, group).run(stop)
        except BaseException as exc:  # reported to the worker's task, which stops the worker
            failure.append(exc)
            raise

    @app.task
    async def index_vectors() -> None:
        stop = threading.Event()
        thread = threading.Thread(target=run, args=(stop,), name=NAME, daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                await asyncio.sleep(0.2)
            error = failure[0] if failure else None
            raise VectorIndexError(f"{NAME} stopped: {error!r}")
        finally:
            stop.set()
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 10.0)

    return app
