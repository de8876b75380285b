"""Analytics sink: events.interactions, recs.served and catalog.items into ClickHouse.

Responsibilities:
- consume the three topics with a plain confluent-kafka consumer (manual commits; ADR 0050);
- decode each message against its contract and turn it into a row of its table;
- insert in batches bounded by size (`analytics.batch_size` rows) and time
  (`analytics.batch_max_wait_s` since the first pending row);
- commit the batch's offsets only after every insert (and every dead letter) succeeded,
  so a crash anywhere before the commit means redelivery, never loss;
- expose metrics and heartbeat as worker "analytics-sink" (streams.metrics).

Redelivery cannot double-count: the tables are ReplacingMergeTree keyed by the event's
identity and every read uses FINAL (analytics.schema, ADR 0050).

The process owns the embedded chDB directory while it runs (analytics.store, ADR 0051).

Failure policy: a malformed message goes to dead.letters with the reason and its offset is
committed with the batch; an insert that fails is retried with backoff (the batch and its
offsets are held, so nothing is lost; when stopping, after three attempts the batch is left
uncommitted for the next run); a failed commit is logged and the next batch's commit covers
it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import faust
from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamrec.analytics import schema
from streamrec.analytics.errors import QueryError
from streamrec.analytics.store import open_store
from streamrec.infra.settings import Settings
from streamrec.streams import codecs, metrics
from streamrec.streams.app import create_app
from streamrec.streams.dead_letters import dead_letter
from streamrec.streams.producer import DeliveryTracker, latency_producer, produce_event
from streamrec.topics import (
    CATALOG_ITEMS,
    DEAD_LETTERS,
    EVENTS_INTERACTIONS,
    RECS_SERVED,
    TopicSpec,
)
from streamrec.topics.errors import SchemaError

NAME = "analytics-sink"
log = logging.getLogger(__name__)

SOURCES: dict[str, tuple[TopicSpec, str, Callable[[Any], list[Any]]]] = {
    EVENTS_INTERACTIONS.name: (EVENTS_INTERACTIONS, schema.INTERACTIONS, schema.interaction_row),
    RECS_SERVED.name: (RECS_SERVED, schema.IMPRESSIONS, schema.impression_row),
    CATALOG_ITEMS.name: (CATALOG_ITEMS, schema.CATALOG, schema.catalog_row),
}


class _Batch:
    """Rows per table plus the next offset to commit per partition."""

    def __init__(self) -> None:
        self.rows: dict[str, list[list[Any]]] = {t: [] for _, t, _ in SOURCES.values()}
        self.offsets: dict[tuple[str, int], int] = {}
        self.size = 0
        self.dead = 0
        self.started = 0.0

    def note(self, topic: str, partition: int, offset: int) -> None:
        if not self.offsets:
            self.started = time.monotonic()
        self.offsets[(topic, partition)] = offset + 1
        self.size += 1


class AnalyticsSink:
    """The consume → insert → commit loop; `run()` until `stop()` (or `max_batches`)."""

    def __init__(self, settings: Settings, group: str | None = None) -> None:
        self.settings = settings
        self.group = group or f"streamrec-{NAME}"
        cfg = settings.analytics
        self.batch_size = cfg.batch_size
        self.max_wait_s = cfg.batch_max_wait_s
        self.client = open_store(settings)
        self.database = settings.clickhouse.database
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": self.group,
                "client.id": f"{settings.kafka.client_id}-{NAME}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )
        self.producer = latency_producer(settings)
        self._dead_tracker = DeliveryTracker()
        self._stop = threading.Event()
        self._batch = _Batch()
        self.inserted = 0  # rows inserted by this process (benchmarks read it)
        self.batches = 0

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        self.consumer.subscribe(list(SOURCES), on_revoke=self._on_revoke)
        try:
            while not self._stop.is_set():
                room = max(1, self.batch_size - self._batch.size)
                for msg in self.consumer.consume(num_messages=min(room, 10_000), timeout=0.2):
                    self._take(msg)
                b = self._batch
                due = b.offsets and time.monotonic() - b.started >= self.max_wait_s
                if b.size >= self.batch_size or due:
                    self.flush()
            self.flush()
        finally:
            self.consumer.close()
            self.producer.flush(10)
            self.client.close()  # releases the embedded chDB directory for other processes

    def _take(self, msg: Any) -> None:
        if msg.error():
            log.warning("consumer error: %s", msg.error())
            return
        topic = msg.topic()
        spec, table, to_row = SOURCES[topic]
        try:
            event = codecs.decode(spec, msg.value())
        except SchemaError as exc:
            letter = dead_letter(
                source_topic=topic,
                processor=NAME,
                reason=exc.reason,
                value=msg.value(),
                key=msg.key(),
                partition=msg.partition(),
                offset=msg.offset(),
            )
            produce_event(self.producer, DEAD_LETTERS, letter, self._dead_tracker)
            metrics.EVENTS_FAILED.labels(NAME, topic, "schema").inc()
            self._batch.dead += 1
        else:
            self._batch.rows[table].append(to_row(event))
        self._batch.note(topic, msg.partition(), msg.offset())

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Hand over a clean cut: what we hold is inserted and committed before another
        # member takes the partitions (without it, it would be redelivered: harmless, slower).
        self.flush()

    def flush(self) -> None:
        """Insert the pending rows, then commit their offsets; retried until it succeeds."""
        batch = self._batch
        if not batch.offsets:
            return
        started = time.perf_counter()
        delay, attempts = 0.2, 0
        while True:
            try:
                self._insert(batch)
                break
            except QueryError as exc:
                attempts += 1
                if self._stop.is_set() and attempts >= 3:
                    raise  # stopping: the batch stays uncommitted and is redelivered on restart
                log.error("insert failed, retrying in %.1fs: %s", delay, exc)
                time.sleep(delay)  # backoff before retrying the held batch
                delay = min(delay * 2, 10.0)
        if batch.dead:
            self.producer.flush(30)  # dead letters are durable before their offsets commit
            self._dead_tracker.raise_if_failed()
        fault = self.settings.analytics.fault_exit_after_insert
        if fault and self.batches + 1 >= fault:
            os._exit(99)  # fault injection (tests): a crash between the insert and the commit
        offsets = [TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("commit failed (the next batch's commit covers it): %s", exc)
        self.inserted += sum(len(rows) for rows in batch.rows.values())
        self._count(batch)
        self.batches += 1
        metrics.PROCESSING_SECONDS.labels(NAME).observe(time.perf_counter() - started)
        self._batch = _Batch()

    def _count(self, batch: _Batch) -> None:
        for topic, (_, table, _) in SOURCES.items():
            if batch.rows[table]:
                metrics.EVENTS_PROCESSED.labels(NAME, topic).inc(len(batch.rows[table]))

    def _insert(self, batch: _Batch) -> None:
        for table, rows in batch.rows.items():
            if not rows:
                continue
            try:
                schema.insert(self.client, self.database, table, rows)
            except Exception as exc:  # clickhouse-connect/chDB errors: translate at the boundary
                raise QueryError(f"insert into {self.database}.{table} failed: {exc}") from exc


def build(settings: Settings, group: str | None = None) -> faust.App:
    """A Faust app hosting the sink (so `streamrec worker analytics-sink` runs it).

    Faust only supplies the worker lifecycle here: the sink's own consumer does the work in
    a thread, and the app's shutdown stops it after its current batch.
    """
    sink_group = group or f"streamrec-{NAME}"
    app = create_app(settings, f"{sink_group}-host")
    metrics.attach(app, settings, NAME, group=sink_group)  # lag of the sink's own group
    holder: dict[str, Any] = {}

    @app.task
    async def _run_sink() -> None:
        import asyncio

        sink = AnalyticsSink(settings, group=sink_group)
        holder["sink"] = sink
        holder["done"] = asyncio.get_running_loop().run_in_executor(None, sink.run)
        await holder["done"]

    @app.on_before_shutdown.connect
    async def _stop_sink(sender: Any, **kwargs: Any) -> None:
        if "sink" in holder:
            holder["sink"].stop()
            await holder["done"]

    return app
