"""Content pipeline: embed catalog items in micro-batches and publish their vectors.

Consumes catalog.items and, per buffer of up to `embedding.buffer_size` items or
`embedding.max_wait_ms` (whichever comes first):
- decodes each item; the last change of an item in the buffer wins;
- removals (`op="remove"`): a tombstone (null value) on catalog.vectors, the id added to
  the `catalog:removed` set (serving filters it at once) and its content hash dropped;
- upserts: builds the item's text (`models.embedder.item_text`) and its content hash
  (text + model version) and skips the item when the hash equals the one of its last
  published vector, so a re-published catalog re-embeds nothing;
- embeds the rest in one model call per buffer (the model cuts it into batches of
  `embedding.batch_size`), in child processes of its own (`models.embedder_process`; on
  CPU one single-threaded process per core, which share each call), and publishes them
  most popular first (`popularity_hint`): under a backlog a buffer is the unit of
  priority, so popular items never wait behind the long tail of a later buffer;
- pipelines buffers (`embedding.overlap_buffers`, on by default): buffer n+1 is planned and
  handed to the model process before buffer n's vectors are published, so the model works
  while the worker publishes and flushes; each buffer's offsets stay uncommitted until its
  own vectors are acknowledged;
- publishes binary vectors (`streams.codecs`) keyed by item id through librdkafka (not
  faust's per-message send path), then records their hashes
  and its running counts (`stats_key`: seen, embedded, skipped, removed, dead, embed calls
  and seconds spent in the model; the model's device, processes and threads per process).

Why one model call per buffer and not one per batch of 64 (ADR 0014): sentence-transformers
sorts the texts of a call by length before batching, so each batch is padded to the length
of texts like it; 64 texts taken in popularity order are padded to the longest of them,
which cost 37% more tokens on the benchmark catalog (the figures are in ADR 0014).

Why the model runs in a child process and not on a thread (ADR 0080): torch releases the GIL
in every op and takes it back after; while the event loop's thread runs Python each take-back
can wait up to the interpreter's switch interval, over hundreds of ops per batch (small next
to this worker's mostly idle loop on 2 cores, large beside a busy one). The child has its
own GIL; it is started with `spawn`, loads and warms up the model once, and gets texts and
returns float32 rows (a buffer's vectors are ~400 KB). On 2 cores neither the child nor the
overlap moved the end-to-end ratio measurably (BENCHMARKS.md): the run is CPU-bound.

Why N single-threaded model processes on CPU and not one with all cores' threads (ADR 0088):
torch's OpenMP threads meet at a barrier after every op, so when the broker, Redis or this
worker preempts one of them the others wait for it, and the whole forward pass runs at the
pace of the preempted thread. One process per core with one torch thread each has no such
barrier (a preempted child delays only its share of the buffer) and was faster idle too
(615 against 515 items/s on 2 cores). Each buffer's call is split across the children in
whole length-sorted batches (`models.embedder_process.split`), so the padding stays that of
one call (ADR 0014). The cost: one model process (~0.75 GB PSS) per core and N model loads
at start-up (in parallel). On cuda one process feeds the GPU, as before.

Why buffers are pipelined and how acks stay safe (ADR 0081): Faust's `take_events` acks a
buffer's events when the agent asks for the next buffer, which would let Faust commit the
offsets of buffer n while its vectors are still being published. The agent takes one extra
reference on each message (`message.incref()`) and the task that publishes the buffer
drops it (`event.ack()`) only after the broker acknowledged the vectors and Redis has the
hashes, so a crash at any point redoes the buffer. At most two buffers are in flight: one
being published, the next in the model. Buffers are published strictly in order, and the
next buffer's hashes are compared with what the in-flight one will write (`InFlight`), so
an item changed in buffer n and changed back in n+1 is not skipped.

Why the content hashes live in Redis (`content:hash`) and not in a Faust table: the hash
must survive restarts and rebalances, and a Faust table would add a changelog topic whose
recovery faust-streaming users report can hang (NOTES.md); Redis is already a dependency
of every worker, a hash lookup for a whole buffer is one HMGET, and losing the hashes only
costs a re-embed, never a wrong vector (hashes are written after the broker acknowledged).

Failure policy: a malformed item (undecodable, wrong schema, nothing to embed) goes to
dead.letters with the reason and the agent carries on. A failure of the model (including a
dead model process: `EmbedderError`, never a hang), Redis or the broker stops the agent at
its next buffer (a failure while no buffer follows is logged at once): the failed buffer's
offsets are never committed, so a restart redoes it (already published items are then
skipped by their hashes). A dead model process (any one of them) fails the call and every
later one. The failure ends the worker (exit 75, `streams.stop_on_failure`, ADR 0107) rather
than restarting the agent in the same process: the failed buffer's held offsets would block
every later commit of its partitions. The model processes are closed first, and all of them
are new in the restarted worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import faust
import numpy as np
import redis.asyncio as aioredis
from confluent_kafka import Producer

from streamrec.infra.redis_clients import async_client
from streamrec.infra.settings import Settings
from streamrec.models.embedder import content_hash, item_text
from streamrec.models.embedder_process import EmbedderInfo, EmbedderProcess
from streamrec.streams import codecs, metrics
from streamrec.streams.app import create_app, faust_topic
from streamrec.streams.dead_letters import AsyncDeadLetterSink, FaustDeadLetters
from streamrec.streams.decoding import AgentDecoder
from streamrec.streams.producer import DeliveryTracker, flush, latency_producer, produce
from streamrec.streams.stop_on_failure import stop_on_failure
from streamrec.topics import CATALOG_ITEMS, CATALOG_VECTORS, CatalogItem, ItemVector
from streamrec.topics.errors import SchemaError
from streamrec.topics.stores import CONTENT_HASHES, REMOVED_ITEMS

NAME = "content-pipeline"
log = logging.getLogger(__name__)


def stats_key(group: str) -> str:
    """Redis hash of a pipeline's running counts (seen, embedded, skipped, removed, dead)."""
    return f"streamrec:content:{group}"


@dataclass
class Plan:
    """What one buffer of catalog.items asks for."""

    upserts: list[CatalogItem] = field(default_factory=list)  # most popular first
    removals: list[str] = field(default_factory=list)
    malformed: list[tuple[object, str]] = field(default_factory=list)  # (event, reason)


def decode_item(value: bytes | None) -> CatalogItem:
    item = codecs.decode(CATALOG_ITEMS, value)
    assert isinstance(item, CatalogItem)
    if item.op == "upsert" and not item_text(item):
        raise SchemaError("nothing to embed: empty title, genres and description")
    return item


def plan(messages: Iterable[tuple[object, bytes | None]]) -> Plan:
    """Sort a buffer of (event, value) into removals, upserts (most popular first) and
    malformed events."""
    latest: dict[str, CatalogItem] = {}
    out = Plan()
    for event, value in messages:
        try:
            item = decode_item(value)
        except SchemaError as exc:
            out.malformed.append((event, exc.reason))
            continue
        latest.pop(item.item_id, None)  # re-insert: dict order = order of last change
        latest[item.item_id] = item
    out.removals = [i.item_id for i in latest.values() if i.op == "remove"]
    upserts = [i for i in latest.values() if i.op == "upsert"]
    out.upserts = sorted(upserts, key=lambda i: i.popularity_hint, reverse=True)  # stable
    return out


Todo = list[tuple[CatalogItem, str, str]]  # (item, text, content hash) to embed


class InFlight:
    """The content hashes buffers still being published will write (None: a removal).

    The agent plans buffer n+1 while buffer n is published (ADR 0081): it must compare an
    item's hash with what n is about to write, not with the store, or an item changed in n
    and changed back in n+1 would be skipped and keep n's vector."""

    def __init__(self) -> None:
        self._hashes: dict[str, str | None] = {}

    def changed(self, candidates: Todo, stored: list[str | None]) -> Todo:
        """The candidates whose hash differs from the last one written (in flight, else
        `stored`, aligned with `candidates`)."""
        return [
            (item, text, h)
            for (item, text, h), old in zip(candidates, stored, strict=True)
            if self._hashes.get(item.item_id, old) != h
        ]

    def claim(self, removals: Sequence[str], todo: Todo) -> None:
        self._hashes.update({i: None for i in removals})
        self._hashes.update({item.item_id: h for item, _, h in todo})

    def settle(self, removals: Sequence[str], todo: Todo) -> None:
        """A buffer's writes are done: forget them unless a later buffer claimed the id."""
        for item_id, value in [(i, None) for i in removals] + [(i.item_id, h) for i, _, h in todo]:
            if item_id in self._hashes and self._hashes[item_id] == value:
                del self._hashes[item_id]

    def __len__(self) -> int:
        return len(self._hashes)


class Model(Protocol):
    """The embedding model (models.embedder_process.EmbedderProcess)."""

    model_version: str
    info: EmbedderInfo

    def embed_timed(self, texts: list[str]) -> Awaitable[tuple[np.ndarray, float]]:
        """One call's unit vectors (one row per text) and the seconds the model spent."""
        ...

    def close(self) -> None: ...


class ContentStore(Protocol):
    """The content hashes, the removed set and the running counts (Redis: `RedisContent`)."""

    async def stored_hashes(self, item_ids: list[str]) -> list[str | None]: ...

    async def removed(self, item_ids: list[str]) -> None:
        """Mark the items removed (serving filters them) and forget their hashes."""
        ...

    async def published(self, hashes: Mapping[str, str], embed_s: float) -> None:
        """Record the hashes of vectors the broker acknowledged (the items are live again)
        and count one model call."""
        ...

    async def record_model(self, info: EmbedderInfo) -> None: ...

    async def record_buffer(self, counts: Mapping[str, int], seconds: float) -> None:
        """Add a finished buffer's counts (seen, skipped, removed, dead)."""
        ...


class VectorSink(Protocol):
    """catalog.vectors: (key, value or None for a tombstone) produced, and acknowledged by
    the broker before this returns (raises when any delivery failed)."""

    async def send(self, messages: Sequence[tuple[bytes, bytes | None]]) -> None: ...


class RedisContent:
    """`ContentStore` over redis.asyncio: one round trip per call."""

    def __init__(self, redis: aioredis.Redis, stats: str) -> None:
        self.redis = redis
        self.stats = stats

    async def stored_hashes(self, item_ids: list[str]) -> list[str | None]:
        stored = await self.redis.hmget(CONTENT_HASHES.key(), item_ids) if item_ids else []
        return [old.decode() if old else None for old in stored]

    async def removed(self, item_ids: list[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(REMOVED_ITEMS.key(), *item_ids)
            pipe.hdel(CONTENT_HASHES.key(), *item_ids)
            await pipe.execute()

    async def published(self, hashes: Mapping[str, str], embed_s: float) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(CONTENT_HASHES.key(), mapping=dict(hashes))
            pipe.srem(REMOVED_ITEMS.key(), *hashes)  # an upsert brings a removed item back
            pipe.hincrby(self.stats, "embedded", len(hashes))
            pipe.hincrby(self.stats, "embed_calls", 1)
            pipe.hincrbyfloat(self.stats, "embed_s", round(embed_s, 4))
            await pipe.execute()

    async def record_model(self, info: EmbedderInfo) -> None:
        await self.redis.hset(
            self.stats,
            mapping={
                "model_version": info.model_version,
                "device": info.device,
                "torch_threads": info.torch_threads,  # per model process
                "embed_processes": info.processes,
                "precision": info.precision,  # on CPU "auto" probes it at start-up (ADR 0103)
                "embed_pids": ",".join(str(p) for p in info.pids),
            },
        )

    async def record_buffer(self, counts: Mapping[str, int], seconds: float) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.stats, "last_buffer_s", f"{seconds:.4f}")
            for name, n in counts.items():
                pipe.hincrby(self.stats, name, n)
            await pipe.execute()


class KafkaVectors:
    """`VectorSink` over a librdkafka producer; the flush runs off the event loop."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    async def send(self, messages: Sequence[tuple[bytes, bytes | None]]) -> None:
        tracker = DeliveryTracker()
        for key, value in messages:
            produce(self.producer, CATALOG_VECTORS, key, value, tracker)
        self.producer.poll(0)
        await asyncio.to_thread(flush, self.producer, 60.0)
        tracker.raise_if_failed()


class ContentPipeline:
    """The pipeline's state and steps; the Faust agent feeds it buffers.

    `prepare` plans a buffer and hands its changed items to the model; `finish` does the
    rest in buffer order (dead letters, removals, vectors, hashes, counts) and then acks the
    buffer's events. `make_model` starts the model (seconds: it runs off the event loop)."""

    def __init__(
        self,
        store: ContentStore,
        vectors: VectorSink,
        dead_letters: AsyncDeadLetterSink,
        make_model: Callable[[], Model],
    ) -> None:
        self.store = store
        self.vectors = vectors
        self.make_model = make_model
        # `plan` decodes (the rules of `decode_item`); this step dead-letters and counts.
        self.rejects = AgentDecoder(CATALOG_ITEMS, NAME, dead_letters, decode=decode_item)
        self.embedder: Model | None = None
        self.in_flight = InFlight()
        self._processed = metrics.EVENTS_PROCESSED.labels(NAME, CATALOG_ITEMS.name)
        self._latency = metrics.PROCESSING_SECONDS.labels(NAME)

    async def load_model(self) -> Model:
        if self.embedder is not None:  # an agent restarted by Faust keeps the process's model
            return self.embedder
        # Starting the children and loading the model takes seconds: off the event loop, so
        # the consumer keeps heartbeating. Each child warms its model up before it answers.
        self.embedder = await asyncio.to_thread(self.make_model)
        await self.store.record_model(self.embedder.info)
        return self.embedder

    def close_model(self) -> None:
        if self.embedder is not None:
            self.embedder.close()
            self.embedder = None

    async def remove(self, item_ids: list[str]) -> None:
        await self.vectors.send([(item_id.encode(), None) for item_id in item_ids])
        await self.store.removed(item_ids)

    async def changed(self, items: list[CatalogItem], removals: Sequence[str] = ()) -> Todo:
        """(item, text, hash) of the items whose content hash differs from the stored one
        (or from the one a buffer still in flight will store); records this buffer's
        upserts and removals as in flight until `in_flight.settle`."""
        assert self.embedder is not None
        version = self.embedder.model_version
        texts = [item_text(i) for i in items]
        hashes = [content_hash(t, version) for t in texts]
        stored = await self.store.stored_hashes([i.item_id for i in items])
        todo = self.in_flight.changed(list(zip(items, texts, hashes, strict=True)), stored)
        self.in_flight.claim(removals, todo)
        return todo

    def start_embedding(self, todo: Todo) -> asyncio.Future[tuple[np.ndarray, float]]:
        """Hand a buffer's changed items to the model processes in ONE call (split across
        them in whole batches); each child starts its share as soon as it is free (its
        share of the previous buffer's call), whatever this process does.

        One call per buffer, not one per `batch_size` chunk: sentence-transformers sorts a
        call's texts by length before cutting them into batches, so a batch is padded to
        the length of similar texts, not to the longest of 64 random ones (ADR 0014)."""
        assert self.embedder is not None
        return asyncio.ensure_future(self.embedder.embed_timed([text for _, text, _ in todo]))

    async def publish(
        self,
        todo: Todo,
        embedding: Awaitable[tuple[np.ndarray, float]],
    ) -> None:
        """Publish a buffer's vectors most popular first; hashes once acknowledged."""
        assert self.embedder is not None
        vectors, embed_s = await embedding
        if not todo:
            return
        version = self.embedder.model_version
        messages = []
        for (item, _, h), vec in zip(todo, vectors, strict=True):
            event = ItemVector(
                item_id=item.item_id,
                model_version=version,
                content_hash=h,
                vector=codecs.vector_bytes(vec),
            )
            messages.append((item.item_id.encode(), codecs.encode(CATALOG_VECTORS, event)))
        await self.vectors.send(messages)  # acknowledged before hashes
        await self.store.published({i.item_id: h for i, _, h in todo}, embed_s)

    async def prepare(
        self, buffer: Sequence[Any]
    ) -> tuple[Plan, Todo, asyncio.Future[tuple[np.ndarray, float]]]:
        """Plan a buffer, find its changed items and start the model on them."""
        work = plan((event, event.value) for event in buffer)
        todo = await self.changed(work.upserts, work.removals)
        return work, todo, self.start_embedding(todo)  # the model works from now on

    async def finish(
        self,
        buffer: Sequence[Any],
        work: Plan,
        todo: Todo,
        embedding: Awaitable[tuple[np.ndarray, float]],
        started: float,
    ) -> None:
        """Everything a buffer does after planning, in buffer order; then its acks."""
        try:
            for event, reason in work.malformed:
                await self.rejects.reject(event, reason)
            if work.removals:
                await self.remove(work.removals)
            await self.publish(todo, embedding)
        finally:  # written, or failed: later buffers compare with the store again
            self.in_flight.settle(work.removals, todo)
        counts = {
            "seen": len(buffer),
            "skipped": len(work.upserts) - len(todo),
            "removed": len(work.removals),
            "dead": len(work.malformed),
        }
        await self.store.record_buffer(counts, time.perf_counter() - started)
        for event in buffer:
            event.ack()  # the reference taken in the agent: now Faust may commit it
        self._processed.inc(len(buffer) - len(work.malformed))
        self._latency.observe(time.perf_counter() - started)


def build(settings: Settings, group: str | None = None) -> faust.App:
    group = group or f"streamrec-{NAME}"
    app = create_app(settings, group)
    metrics.attach(app, settings, NAME)
    source = faust_topic(app, CATALOG_ITEMS)
    # Vectors and tombstones go through librdkafka, not faust's producer: faust's send path
    # costs tens of microseconds of Python per message on the event loop, which on a GPU is
    # time the model waits for its next buffer (ADR 0082). murmur2 is the partitioner faust
    # (aiokafka) used for this compacted topic, so an item's key stays in its partition and
    # compaction keeps one vector per item.
    producer = latency_producer(settings, **{"linger.ms": 2, "partitioner": "murmur2_random"})
    pipeline = ContentPipeline(
        RedisContent(async_client(settings), stats_key(group)),
        KafkaVectors(producer),
        FaustDeadLetters(app),
        lambda: EmbedderProcess(settings),
    )
    cfg = settings.embedding

    @app.agent(source, name=NAME)
    async def embed(stream: faust.StreamT) -> None:
        await pipeline.load_model()  # once per agent, before the first buffer
        # A failed buffer's held offsets would block every later commit of its partitions
        # while the agent went on: the worker ends instead, and the buffer is redone.
        with stop_on_failure(NAME):
            await _embed_stream(stream)

    async def _embed_stream(stream: faust.StreamT) -> None:
        previous: asyncio.Task[None] | None = None
        try:
            async for buffer in stream.take_events(cfg.buffer_size, within=cfg.max_wait_ms / 1000):
                # take_events acks a buffer when the agent takes the next one; one more
                # reference per message keeps its offset uncommitted until `finish` is done.
                for event in buffer:
                    event.message.incref()
                started = time.perf_counter()
                work, todo, embedding = await pipeline.prepare(buffer)
                if previous is not None:
                    await previous  # the last buffer was published meanwhile; or it raises
                previous = asyncio.ensure_future(
                    pipeline.finish(buffer, work, todo, embedding, started)
                )
                previous.add_done_callback(_log_failure)
                if not cfg.overlap_buffers:
                    await previous  # strictly one buffer at a time (raises its failure)
        except Exception:
            pipeline.close_model()  # its model processes go with the worker
            raise

    @app.on_before_shutdown.connect
    def _stop(sender: object, **kwargs: object) -> None:
        pipeline.close_model()  # the model process goes with the worker
        producer.flush(10)

    return app


def _log_failure(task: asyncio.Task[None]) -> None:
    # Raised again in the agent at its next buffer; logged now in case none comes.
    if not task.cancelled() and task.exception() is not None:
        log.error("content pipeline: a buffer failed: %r", task.exception())
