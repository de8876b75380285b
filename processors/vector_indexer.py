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

import faust
import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamrec.infra.settings import Settings
from streamrec.streams import codecs, metrics
from streamrec.streams.app import create_app
from streamrec.streams.dead_letters import dead_letter
from streamrec.streams.producer import latency_producer, produce_event
from streamrec.topics import CATALOG_VECTORS, DEAD_LETTERS, REGISTRY_CHANGES, RegistryChange
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


class VectorIndexer:
    """Applies catalog.vectors messages to a table and decides when to snapshot."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cfg = settings.index
        self.table = VectorTable()
        self.snapshots = SnapshotStore(settings)
        self.model_of: dict[str, str] = {}
        self.dirty = False
        self.caught_up = False
        self.last_change = time.monotonic()
        self.last_snapshot = time.monotonic()
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
        self.last_change = time.monotonic()

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
        self.last_snapshot = time.monotonic()
        current = self.snapshots.promoted()
        digest = self.table.digest()
        if current is not None and current.manifest.model_dump().get("content_digest") == digest:
            return None
        published = self.snapshots.publish(self.table, self.model_version())
        self.published.append(published)
        return published


class IndexerLoop:
    """The blocking consume loop, run in a thread of the worker process."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.settings = settings
        self.group = group
        self.indexer = VectorIndexer(settings)
        self.error: BaseException | None = None
        self.store = redis.Redis.from_url(settings.redis_url)
        self.status = status_key(group)

    def report(self, outcome: str) -> None:
        """Best effort: the status hash is for people and tests, never worth stopping for."""
        try:
            self.store.hset(
                self.status,
                mapping={
                    "outcome": outcome,
                    "items": len(self.indexer.table),
                    "applied": self.indexer.applied,
                    "caught_up": int(self.indexer.caught_up),
                },
            )
        except redis.RedisError as exc:
            log.warning("indexer status not written: %s", exc)

    def run(self, stop: threading.Event) -> None:
        try:
            self._run(stop)
        except BaseException as exc:  # reported to the worker's task, which stops the worker
            self.error = exc
            raise

    def _run(self, stop: threading.Event) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": f"{self.group}-reader",  # never joined nor committed: assigned
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        producer = latency_producer(self.settings)
        topic = CATALOG_VECTORS.name
        try:
            partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
            tps = [TopicPartition(topic, p) for p in partitions]
            startup_end = {
                tp.partition: consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in tps
            }
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            log.info("indexer: rebuilding from %s up to %s", topic, startup_end)
            self.store.delete(self.status)
            self.report("rebuilding")
            while not stop.is_set():
                for msg in consumer.consume(2000, timeout=0.2):
                    if msg.error():
                        raise KafkaException(msg.error())
                    reason = self.indexer.apply(msg.key(), msg.value())
                    if reason:
                        letter = dead_letter(
                            source_topic=topic,
                            processor=NAME,
                            reason=reason,
                            value=msg.value(),
                            key=msg.key(),
                            partition=msg.partition(),
                            offset=msg.offset(),
                        )
                        produce_event(producer, DEAD_LETTERS, letter)
                producer.poll(0)
                if not self.indexer.caught_up:
                    positions = consumer.position(tps)
                    self.indexer.caught_up = all(
                        tp.offset >= startup_end[tp.partition] or startup_end[tp.partition] == 0
                        for tp in positions
                    )
                    if self.indexer.caught_up and not self.indexer.table:
                        self.indexer.dirty = True  # an empty topic still gets an index
                if self.indexer.due(time.monotonic()):
                    self._snapshot(producer)
        finally:
            producer.flush(10)
            consumer.close()

    def _snapshot(self, producer: object) -> None:
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
        change = RegistryChange(
            kind="index", name="index", version=published.version, action="promote"
        )
        produce_event(producer, REGISTRY_CHANGES, change)  # type: ignore[arg-type]


def build(settings: Settings, group: str | None = None) -> faust.App:
    group = group or f"streamrec-{NAME}"
    app = create_app(settings, group)
    metrics.attach(app, settings, NAME)
    loop_ = IndexerLoop(settings, group)

    @app.task
    async def index_vectors() -> None:
        stop = threading.Event()
        thread = threading.Thread(target=loop_.run, args=(stop,), name=NAME, daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                await asyncio.sleep(0.2)
            raise VectorIndexError(f"{NAME} stopped: {loop_.error!r}")
        finally:
            stop.set()
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 10.0)

    return app
