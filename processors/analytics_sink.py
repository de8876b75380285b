"""Analytics sink: events.interactions, recs.served and catalog.items into ClickHouse.

Responsibilities:
- consume the three topics with a plain confluent-kafka consumer (manual commits; ADR 0050);
- decode each consumed batch against its contract: events.interactions a batch at a time
  into Arrow columns (`analytics.columns`; what the columnar check does not vouch for goes
  through the schema one by one), the other topics message by message into rows;
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
it. Retrying is bounded: inserts failing for `analytics.sink_stuck_s` mark the worker stuck
(`/readyz` 503, heartbeat `stuck` with the error; ready again if an insert then succeeds),
and for `analytics.sink_give_up_s` end it with `metrics.EXIT_STUCK`, the batch uncommitted,
for its supervisor to restart it: a store that went fatal (an embedded ClickHouse after
"shutting down due to a fatal error") does not come back inside the process that holds it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import faust
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from streamrec.analytics import schema
from streamrec.analytics.columns import ColumnBlock, decode_interactions
from streamrec.analytics.columns import from_events as columns_of
from streamrec.analytics.errors import QueryError, SinkStuck
from streamrec.analytics.store import open_store
from streamrec.infra.settings import AnalyticsSettings, Settings
from streamrec.streams import metrics
from streamrec.streams.app import create_app
from streamrec.streams.dead_letters import ProducerDeadLetters
from streamrec.streams.decoding import Decoder
from streamrec.streams.membership import librdkafka_membership
from streamrec.streams.producer import DeliveryTracker, latency_producer
from streamrec.topics import CATALOG_ITEMS, EVENTS_INTERACTIONS, RECS_SERVED, DeadLetter, TopicSpec

NAME = "analytics-sink"
log = logging.getLogger(__name__)

SOURCES: dict[str, tuple[TopicSpec, str, Callable[[Any], list[Any]]]] = {
    EVENTS_INTERACTIONS.name: (EVENTS_INTERACTIONS, schema.INTERACTIONS, schema.interaction_row),
    RECS_SERVED.name: (RECS_SERVED, schema.IMPRESSIONS, schema.impression_row),
    CATALOG_ITEMS.name: (CATALOG_ITEMS, schema.CATALOG, schema.catalog_row),
}


class _Batch:
    """Rows per table plus the next offset to commit per partition."""

    def __init__(self, started: float = 0.0) -> None:
        self.rows: dict[str, list[list[Any]]] = {t: [] for _, t, _ in SOURCES.values()}
        self.block = ColumnBlock()  # events.interactions, as columns
        self.rows[schema.INTERACTIONS] = self.block  # type: ignore[assignment]
        self.offsets: dict[tuple[str, int], int] = {}
        self.size = 0
        self.dead = 0
        self.started = started

    def note(self, topic: str, partition: int, offset: int, now: Callable[[], float]) -> None:
        if not self.offsets:
            self.started = now()
        self.offsets[(topic, partition)] = offset + 1
        self.size += 1


class Tables(Protocol):
    """The ClickHouse tables rows are inserted into (`ChdbTables`)."""

    def insert(self, table: str, rows: Sequence[list[Any]]) -> None:
        """Insert one block (a `ColumnBlock` or rows); raises QueryError when it fails (the
        batch is retried)."""
        ...

    def close(self) -> None: ...


class SinkConsumer(Protocol):
    """The sink's consumer (confluent_kafka.Consumer, manual commits)."""

    def subscribe(self, topics: list[str], *, on_revoke: Callable[..., None]) -> None: ...

    def consume(self, num_messages: int, timeout: float) -> list[Any]: ...

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> Any: ...

    def close(self) -> None: ...


class DeadLetterOutbox(Protocol):
    """Dead letters, sent as they are found and made durable before their offsets commit."""

    def send(self, letter: DeadLetter) -> None: ...

    def settle(self) -> None:
        """Wait until every letter sent is delivered; raise when one was not."""
        ...

    def close(self) -> None: ...


class ChdbTables:
    """`Tables` over the analytics store's client (chDB or ClickHouse)."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database

    def insert(self, table: str, rows: Sequence[list[Any]]) -> None:
        try:
            if isinstance(rows, ColumnBlock):
                # One Arrow block: ClickHouse reads the columns as they are.
                self.client.insert_arrow(table, rows.table(), database=self.database)
            else:
                schema.insert(self.client, self.database, table, list(rows))
        except Exception as exc:  # clickhouse-connect/chDB errors: translate at the boundary
            raise QueryError(f"insert into {self.database}.{table} failed: {exc}") from exc

    def close(self) -> None:
        self.client.close()  # releases the embedded chDB directory for other processes


class ProducerOutbox:
    """`DeadLetterOutbox` over a librdkafka producer."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.tracker = DeliveryTracker()
        self._letters = ProducerDeadLetters(producer, self.tracker)

    def send(self, letter: DeadLetter) -> None:
        self._letters.send(letter)

    def settle(self) -> None:
        self.producer.flush(30)
        self.tracker.raise_if_failed()

    def close(self) -> None:
        self.producer.flush(10)


class AnalyticsSink:
    """The consume → insert → commit loop; `run()` until `stop()`.

    Ports: `tables` (the inserts), `consumer` (messages in, offsets committed), `dead_letters`.
    `exit_after_insert` (fault injection, tests) kills the process between the insert and
    the commit of that batch; `clock` and `sleep` time the batches and the retry backoff."""

    def __init__(
        self,
        cfg: AnalyticsSettings,
        tables: Tables,
        consumer: SinkConsumer,
        dead_letters: DeadLetterOutbox,
        *,
        exit_after_insert: int = 0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.batch_size = cfg.batch_size
        self.max_wait_s = cfg.batch_max_wait_s
        self.stuck_s = cfg.sink_stuck_s
        self.give_up_s = cfg.sink_give_up_s
        self.tables = tables
        self.consumer = consumer
        self.dead_letters = dead_letters
        self.exit_after_insert = exit_after_insert
        self.clock = clock
        self.sleep = sleep
        self._decoders = {
            topic: Decoder(spec, NAME, dead_letters) for topic, (spec, _, _) in SOURCES.items()
        }
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
                self.poll()
            self.flush()
        except SinkStuck:
            raise  # no clean close: a store that went fatal may hang in it; the process ends
        except BaseException:
            self._close()
            raise
        self._close()

    def _close(self) -> None:
        self.consumer.close()
        self.dead_letters.close()
        self.tables.close()

    def poll(self) -> None:
        """One consume call; then a flush if the batch is full or its time is up."""
        room = max(1, self.batch_size - self._batch.size)
        self.take_batch(self.consumer.consume(num_messages=min(room, 10_000), timeout=0.2))
        if self.due():
            self.flush()

    def take_batch(self, messages: list[Any]) -> None:
        """A consumed batch into the pending one, in order: each run of interactions decoded
        together into columns, other topics one by one; every offset noted, dead-lettered
        ones included (letters go out in the messages' order)."""
        hot: list[Any] = []
        hot_topic = EVENTS_INTERACTIONS.name
        for msg in messages:
            if msg.topic() == hot_topic and not msg.error():
                hot.append(msg)
                continue
            if hot:
                self._take_interactions(hot)
                hot = []
            self.take(msg)
        if hot:
            self._take_interactions(hot)

    def _take_interactions(self, messages: list[Any]) -> None:
        batch, topic = self._batch, EVENTS_INTERACTIONS.name
        if not batch.offsets:
            batch.started = self.clock()
        # In order, so each partition keeps its last offset (+1: the next to read).
        batch.offsets.update({(topic, m.partition()): m.offset() + 1 for m in messages})
        batch.size += len(messages)
        decoder = self._decoders[topic]
        dead_before = decoder.dead
        part = decode_interactions([m.value() for m in messages], lambda i: decoder(messages[i]))
        self._batch.block.add(part)
        self._batch.dead += decoder.dead - dead_before

    def due(self) -> bool:
        b = self._batch
        late = bool(b.offsets) and self.clock() - b.started >= self.max_wait_s
        return b.size >= self.batch_size or late

    def take(self, msg: Any) -> None:
        """One message into the batch: its row, or a dead letter; its offset either way."""
        if msg.error():
            log.warning("consumer error: %s", msg.error())
            return
        topic = msg.topic()
        _spec, table, to_row = SOURCES[topic]
        event = self._decoders[topic](msg)
        if event is None:  # dead-lettered; its offset is committed with the batch
            self._batch.dead += 1
        elif table == schema.INTERACTIONS:
            self._batch.block.add(columns_of([event]))
        else:
            self._batch.rows[table].append(to_row(event))
        self._batch.note(topic, msg.partition(), msg.offset(), self.clock)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Hand over a clean cut: what we hold is inserted and committed before another
        # member takes the partitions (without it, it would be redelivered: harmless, slower).
        self.flush()

    def flush(self) -> None:
        """Insert the pending rows, then commit their offsets; retried until it succeeds."""
        batch = self._batch
        if not batch.offsets:
            return
        started = time.perf_counter()
        delay, attempts, failing_since = 0.2, 0, 0.0
        while True:
            try:
                self._insert(batch)
                break
            except QueryError as exc:
                attempts += 1
                if self._stop.is_set() and attempts >= 3:
                    raise  # stopping: the batch stays uncommitted and is redelivered on restart
                now = self.clock()
                failing_since = failing_since or now
                self._check_progress(now - failing_since, exc)
                log.error("insert failed, retrying in %.1fs: %s", delay, exc)
                self.sleep(delay)  # backoff before retrying the held batch
                delay = min(delay * 2, 10.0)
        if attempts and not metrics.READINESS.ready:
            metrics.READINESS.reset()  # the store came back by itself
            log.warning("inserts succeed again after %d failed attempts", attempts)
        if batch.dead:
            self.dead_letters.settle()  # dead letters are durable before their offsets commit
        fault = self.exit_after_insert
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

    def _check_progress(self, failing_s: float, exc: QueryError) -> None:
        """Bounded retrying: stuck (not ready) past `stuck_s`; past `give_up_s` raise
        `SinkStuck`, which ends the worker with the batch uncommitted."""
        if failing_s >= self.give_up_s:
            raise SinkStuck(f"inserts failing for {failing_s:.0f} s: {exc}")
        if failing_s >= self.stuck_s and metrics.READINESS.ready:
            metrics.mark_stuck(f"analytics sink: inserts failing for {failing_s:.0f} s: {exc}")

    def _count(self, batch: _Batch) -> None:
        for topic, (_, table, _) in SOURCES.items():
            if batch.rows[table]:
                metrics.EVENTS_PROCESSED.labels(NAME, topic).inc(len(batch.rows[table]))

    def _insert(self, batch: _Batch) -> None:
        for table, rows in batch.rows.items():
            if rows:
                self.tables.insert(table, rows)


def open_sink(settings: Settings, group: str | None = None) -> AnalyticsSink:
    """The sink over the real ports: its own consumer, the analytics store, a producer."""
    group = group or f"streamrec-{NAME}"
    consumer = Consumer(
        {
            **settings.kafka_config(),
            **librdkafka_membership(settings, group),
            "client.id": f"{settings.kafka.client_id}-{NAME}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )
    return AnalyticsSink(
        settings.analytics,
        ChdbTables(open_store(settings), settings.clickhouse.database),
        consumer,
        ProducerOutbox(latency_producer(settings)),
        exit_after_insert=settings.faults.sink_exit_after_insert or 0,
    )


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

        sink = open_sink(settings, group=sink_group)
        holder["sink"] = sink
        holder["done"] = asyncio.get_running_loop().run_in_executor(None, sink.run)
        try:
            await holder["done"]
        except SinkStuck as exc:
            # Not a clean stop: closing a store that went fatal can hang, and the held
            # batch must stay uncommitted. The supervisor restarts the worker.
            metrics.exit_stuck(f"analytics sink: {exc}")
        except Exception as exc:  # the sink thread died: the worker must not look alive
            if sink._stop.is_set():
                raise  # stopping: the held batch stays uncommitted for the next run
            log.exception("analytics sink stopped on a failure")
            metrics.exit_stuck(f"analytics sink: {type(exc).__name__}: {exc}")

    @app.on_before_shutdown.connect
    async def _stop_sink(sender: Any, **kwargs: Any) -> None:
        if "sink" in holder:
            holder["sink"].stop()
            await holder["done"]

    return app
