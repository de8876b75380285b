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
  `embedding.batch_size`) and publishes them most popular first (`popularity_hint`): under
  a backlog a buffer is the unit of priority, so popular items never wait behind the long
  tail of a later buffer;
- publishes binary vectors (`streams.codecs`) keyed by item id, then records their hashes
  and its running counts (`stats_key`: seen, embedded, skipped, removed, dead, embed calls
  and seconds spent in the model).

Why one model call per buffer and not one per batch of 64 (ADR 0014): sentence-transformers
sorts the texts of a call by length before batching, so each batch is padded to the length
of texts like it; 64 texts taken in popularity order are padded to the longest of them,
which cost 37% more tokens on the benchmark catalog (the figures are in ADR 0014).
The model runs on one dedicated thread (torch releases the GIL, so the event loop keeps
fetching and heartbeating), always the same one so torch keeps one OpenMP team, and it is
warmed up at load so the first buffer of a backlog does not pay for kernel set-up.

Why the content hashes live in Redis (`content:hash`) and not in a Faust table: the hash
must survive restarts and rebalances, and a Faust table would add a changelog topic whose
recovery faust-streaming users report can hang (NOTES.md); Redis is already a dependency
of every worker, a hash lookup for a whole buffer is one HMGET, and losing the hashes only
costs a re-embed, never a wrong vector (hashes are written after the broker acknowledged).

Failure policy: a malformed item (undecodable, wrong schema, nothing to embed) goes to
dead.letters with the reason and the agent carries on. A failure of the model, Redis or
the broker stops the worker: its offsets are not committed past the buffer, so a restart
redoes that buffer (already published items are then skipped by their hashes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import faust
import redis.asyncio as aioredis

from infra.settings import Settings
from models.embedder import Embedder, content_hash, item_text
from streams import codecs, metrics
from streams.app import create_app, faust_topic
from streams.dead_letters import FaustDeadLetters
from topics import CATALOG_ITEMS, CATALOG_VECTORS, CatalogItem, ItemVector
from topics.errors import SchemaError
from topics.stores import CONTENT_HASHES, REMOVED_ITEMS

NAME = "content-pipeline"


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


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


class ContentPipeline:
    """The pipeline's state and steps; the Faust agent feeds it buffers."""

    def __init__(
        self,
        settings: Settings,
        store: aioredis.Redis,
        vectors_topic: faust.TopicT,
        stats: str,
    ) -> None:
        self.settings = settings
        self.store = store
        self.vectors_topic = vectors_topic
        self.stats = stats
        self.embedder: Embedder | None = None
        # Every model call on the same OS thread: one OpenMP team, warmed up once (ADR 0014).
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")

    def _load(self) -> Embedder:
        embedder = Embedder(self.settings)
        # The first calls of a fresh process pay for kernel set-up; pay it before the first
        # buffer (texts of a few lengths, one batch), not on the first items of a backlog.
        embedder.embed([" ".join(["warm-up"] * (1 + i % 24)) for i in range(embedder.batch_size)])
        return embedder

    async def load_model(self) -> Embedder:
        loop = asyncio.get_running_loop()
        self.embedder = await loop.run_in_executor(self.model_thread, self._load)
        await self.store.hset(
            self.stats,
            mapping={
                "model_version": self.embedder.model_version,
                "device": self.embedder.device,
                "torch_threads": await loop.run_in_executor(self.model_thread, _torch_threads),
            },
        )
        return self.embedder

    async def remove(self, item_ids: list[str]) -> None:
        for item_id in item_ids:
            await self.vectors_topic.send(key=item_id.encode(), value=None)
        await self.vectors_topic.app.producer.flush()
        async with self.store.pipeline(transaction=False) as pipe:
            pipe.sadd(REMOVED_ITEMS.key(), *item_ids)
            pipe.hdel(CONTENT_HASHES.key(), *item_ids)
            await pipe.execute()

    async def changed(self, items: list[CatalogItem]) -> list[tuple[CatalogItem, str, str]]:
        """(item, text, hash) of the items whose content hash differs from the stored one."""
        assert self.embedder is not None
        version = self.embedder.model_version
        texts = [item_text(i) for i in items]
        hashes = [content_hash(t, version) for t in texts]
        stored = await self.store.hmget(CONTENT_HASHES.key(), [i.item_id for i in items])
        return [
            (item, text, h)
            for item, text, h, old in zip(items, texts, hashes, stored, strict=True)
            if old is None or old.decode() != h
        ]

    async def embed_and_publish(self, todo: list[tuple[CatalogItem, str, str]]) -> None:
        """Embed a buffer's changed items in ONE model call, then publish most popular first.

        One call per buffer, not one per `batch_size` chunk: sentence-transformers sorts a
        call's texts by length before cutting them into batches, so a batch is padded to
        the length of similar texts, not to the longest of 64 random ones (ADR 0014)."""
        assert self.embedder is not None
        if not todo:
            return
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        # The model runs on its own thread (one OpenMP team, ADR 0014); the event loop keeps
        # fetching and heartbeating meanwhile.
        vectors = await loop.run_in_executor(
            self.model_thread, self.embedder.embed, [text for _, text, _ in todo]
        )
        embed_s = time.perf_counter() - started
        for (item, _, h), vec in zip(todo, vectors, strict=True):
            event = ItemVector(
                item_id=item.item_id,
                model_version=self.embedder.model_version,
                content_hash=h,
                vector=codecs.vector_bytes(vec),
            )
            await self.vectors_topic.send(
                key=item.item_id.encode(), value=codecs.encode(CATALOG_VECTORS, event)
            )
        await self.vectors_topic.app.producer.flush()  # acknowledged before hashes
        ids = [item.item_id for item, _, _ in todo]
        async with self.store.pipeline(transaction=False) as pipe:
            pipe.hset(CONTENT_HASHES.key(), mapping={i.item_id: h for i, _, h in todo})
            pipe.srem(REMOVED_ITEMS.key(), *ids)  # an upsert brings a removed item back
            pipe.hincrby(self.stats, "embedded", len(todo))
            pipe.hincrby(self.stats, "embed_calls", 1)
            pipe.hincrbyfloat(self.stats, "embed_s", round(embed_s, 4))
            await pipe.execute()


def build(settings: Settings, group: str | None = None) -> faust.App:
    group = group or f"streamrec-{NAME}"
    app = create_app(settings, group)
    metrics.attach(app, settings, NAME)
    source = faust_topic(app, CATALOG_ITEMS)
    vectors_topic = faust_topic(app, CATALOG_VECTORS)
    dead_letters = FaustDeadLetters(app, NAME)
    store = aioredis.from_url(settings.redis_url)
    pipeline = ContentPipeline(settings, store, vectors_topic, stats_key(group))
    cfg = settings.embedding

    @app.agent(source, name=NAME)
    async def embed(stream: faust.StreamT) -> None:
        processed = metrics.EVENTS_PROCESSED.labels(NAME, CATALOG_ITEMS.name)
        failed = metrics.EVENTS_FAILED.labels(NAME, CATALOG_ITEMS.name, "schema")
        latency = metrics.PROCESSING_SECONDS.labels(NAME)
        await pipeline.load_model()  # once per process, before the first buffer
        async for buffer in stream.take_events(cfg.buffer_size, within=cfg.max_wait_ms / 1000):
            started = time.perf_counter()
            work = plan((event, event.value) for event in buffer)
            for event, reason in work.malformed:
                await dead_letters.send(event, reason)
            if work.removals:
                await pipeline.remove(work.removals)
            todo = await pipeline.changed(work.upserts) if work.upserts else []
            await pipeline.embed_and_publish(todo)
            async with store.pipeline(transaction=False) as pipe:
                pipe.hset(pipeline.stats, "last_buffer_s", f"{time.perf_counter() - started:.4f}")
                pipe.hincrby(pipeline.stats, "seen", len(buffer))
                pipe.hincrby(pipeline.stats, "skipped", len(work.upserts) - len(todo))
                pipe.hincrby(pipeline.stats, "removed", len(work.removals))
                pipe.hincrby(pipeline.stats, "dead", len(work.malformed))
                await pipe.execute()
            processed.inc(len(buffer) - len(work.malformed))
            failed.inc(len(work.malformed))
            latency.observe(time.perf_counter() - started)

    return app
