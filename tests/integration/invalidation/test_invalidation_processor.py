"""The invalidation worker on a real stack: real MiniLM vectors of ML-100K movies, real Kafka,
real Redis; users who love one genre each, and their precomputed candidate lists.

Checked: a new horror film reaches exactly the horror fans; 1,000 upserts of one item make one
refresh per affected key; a removal is marked for serving before any refresh; a model
promotion's refreshes never exceed the rate bound (counted on the topic); a malformed
message is dead-lettered while the worker keeps going; and a restarted worker refreshes for
the changes made while it was down, without replaying its history.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from confluent_kafka import Consumer, TopicPartition

from streamrec.infra.settings import Settings
from streamrec.invalidation.pacing import max_commands, max_in_any_window
from streamrec.models.embedder import Embedder, content_hash, item_text
from streamrec.processors.invalidation import stats_key
from streamrec.serving.ports import ItemInfo
from streamrec.serving.redis_stores import RedisPopular
from streamrec.serving.rerank import rerank
from streamrec.streams import codecs
from streamrec.streams.producer import bulk_producer, flush, produce_event
from streamrec.streams.sources.movielens import load_items
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import (
    CACHE_INVALIDATIONS,
    CANDIDATES,
    CATALOG_ITEMS,
    CATALOG_VECTORS,
    DEAD_LETTERS,
    EVENTS_INTERACTIONS,
    REGISTRY_CHANGES,
    CandidatesUpdated,
    CatalogItem,
    DeadLetter,
    Interaction,
    ItemVector,
    RefreshCommand,
    RegistryChange,
    candidate_codec,
)
from streamrec.topics.stores import REMOVED_ITEMS, USER_CANDIDATES, Candidate, CandidateList
from tests.kafka_helpers import end_offsets, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GENRES = {"horror": "Horror", "kids": "Children's", "docs": "Documentary"}
FANS_PER_GENRE = 15
ITEMS_PER_GENRE = 40


@dataclass
class World:
    settings: Settings
    embedder: Embedder
    fans: dict[str, list[str]]
    items: dict[str, list[CatalogItem]]
    seeded: dict[str, bytes]
    worker: WorkerProcess
    group: str


def _pick(items: list[CatalogItem], genre: str) -> list[CatalogItem]:
    """Films of `genre` alone first, then films that have it among others."""
    alone = [i for i in items if i.genres == [genre]]
    mixed = [i for i in items if genre in i.genres and i.genres != [genre]]
    return (alone + mixed)[:ITEMS_PER_GENRE]


def _vector(embedder: Embedder, item: CatalogItem) -> ItemVector:
    text = item_text(item)
    return ItemVector(
        item_id=item.item_id,
        model_version=embedder.model_version,
        content_hash=content_hash(text, embedder.model_version),
        vector=codecs.vector_bytes(embedder.embed([text])[0]),
    )


@pytest.fixture(scope="module")
def world(isolated_stack: Settings, ml100k: Path) -> Iterator[World]:
    settings = isolated_stack.with_overrides(
        invalidation={
            "window_s": 0.5,
            "max_delay_s": 3.0,
            "await_index_s": 0.0,  # no vector indexer runs here
            "refresh_rate_per_s": 10.0,
            "refresh_burst": 2,
            # 25 of the 120 films: about the share of the catalogue a candidate list holds.
            "neighbour_rank": 25,
            "thresholds_max_age_s": 0.0,
        }
    )
    embedder = Embedder(settings)
    catalog = load_items(ml100k)
    items = {g: _pick(catalog, name) for g, name in GENRES.items()}
    assert all(len(v) == ITEMS_PER_GENRE for v in items.values())
    rng = random.Random(8)
    producer = bulk_producer(settings)
    store = redis.Redis.from_url(settings.redis_url)
    texts = [item_text(i) for g in items.values() for i in g]
    vectors = embedder.embed(texts)
    flat = [i for g in items.values() for i in g]
    for item, vec in zip(flat, vectors, strict=True):
        produce_event(producer, CATALOG_ITEMS, item)
        h = content_hash(item_text(item), embedder.model_version)
        produce_event(
            producer,
            CATALOG_VECTORS,
            ItemVector(
                item_id=item.item_id,
                model_version=embedder.model_version,
                content_hash=h,
                vector=codecs.vector_bytes(vec),
            ),
        )
    fans: dict[str, list[str]] = {}
    seeded: dict[str, bytes] = {}
    t0 = 880_000_000
    for g_idx, (genre, genre_items) in enumerate(items.items()):
        fans[genre] = [f"{genre}-fan-{u}" for u in range(FANS_PER_GENRE)]
        for u_idx, user in enumerate(fans[genre]):
            for n, item in enumerate(rng.sample(genre_items, 8)):
                ts = t0 + 1000 * (u_idx * len(items) + g_idx) + n
                produce_event(
                    producer,
                    EVENTS_INTERACTIONS,
                    Interaction(
                        event_id=f"{user}-{item.item_id}",
                        user_id=user,
                        item_id=item.item_id,
                        kind="rating",
                        rating=5,
                        ts=datetime.fromtimestamp(ts, UTC),
                    ),
                )
            held = rng.sample(genre_items, 20)
            cand = CandidateList(
                user_id=user,
                model_version="seed",
                items=[Candidate(item_id=i.item_id, score=1.0, sources=["content"]) for i in held],
            )
            raw = candidate_codec.encode(cand)
            store.set(USER_CANDIDATES.key(user_id=user), raw)
            seeded[user] = raw
            produce_event(
                producer,
                CANDIDATES,
                CandidatesUpdated(user_id=user, count=len(held), model_version="seed"),
            )
    flush(producer)
    group = "t-invalidation"
    worker = WorkerProcess(settings, "invalidation", group).start()
    try:
        # Its counters appear once it has rebuilt its state from the topics and runs.
        wait_for(
            lambda: store.exists(stats_key(group)) or not worker.alive(),
            90,
            "the invalidation worker to start",
        )
        assert worker.alive(), worker.log.read_text()[-3000:]
        yield World(settings, embedder, fans, items, seeded, worker, group)
    finally:
        worker.stop()
        store.close()


def read_commands(settings: Settings, start: dict[int, int]) -> list[tuple[float, RefreshCommand]]:
    """Every refresh command after `start`, with its topic timestamp (seconds)."""
    end = end_offsets(settings, CACHE_INVALIDATIONS.name)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "t-read-cmds",
            "enable.auto.commit": False,
        }
    )
    want = {p: e for p, e in end.items() if e > start.get(p, 0)}
    consumer.assign([TopicPartition(CACHE_INVALIDATIONS.name, p, start.get(p, 0)) for p in want])
    out: list[tuple[float, RefreshCommand]] = []
    left = {p: want[p] - start.get(p, 0) for p in want}
    deadline = time.monotonic() + 30
    try:
        while any(left.values()) and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=0.5):
                if msg.error() or msg.offset() >= end[msg.partition()]:
                    continue
                left[msg.partition()] -= 1
                command = codecs.decode(CACHE_INVALIDATIONS, msg.value())
                out.append((msg.timestamp()[1] / 1000.0, command))
    finally:
        consumer.close()
    assert not any(left.values()), "commands unread"
    return out


def idle(world: World) -> bool:
    store = redis.Redis.from_url(world.settings.redis_url)
    try:
        stats = store.hgetall(stats_key(world.group))
        return stats.get(b"idle") == b"1"
    finally:
        store.close()


def wait_commands(world: World, start: dict[int, int], done, what: str) -> list:
    """Poll the topic until `done(commands)`, then until the worker is idle; all commands."""
    assert world.worker.alive()
    wait_for(lambda: done([c for _, c in read_commands(world.settings, start)]), 60, what)
    wait_for(lambda: idle(world), 30, "the worker to drain its queue")
    return read_commands(world.settings, start)


def new_horror_film(world: World, item_id: str) -> tuple[CatalogItem, ItemVector]:
    item = CatalogItem(
        item_id=item_id,
        title="Night of the Living Dead Again",
        year=1998,
        genres=["Horror"],
    )
    return item, _vector(world.embedder, item)


def test_a_new_item_reaches_the_fans_of_its_genre_and_touches_no_one_else(world: World) -> None:
    start = end_offsets(world.settings, CACHE_INVALIDATIONS.name)
    item, vector = new_horror_film(world, "new-horror-1")
    producer = bulk_producer(world.settings)
    produce_event(producer, CATALOG_ITEMS, item)
    produce_event(producer, CATALOG_VECTORS, vector)
    flush(producer)
    horror = set(world.fans["horror"])
    commands = wait_commands(
        world, start, lambda cs: horror <= {c.user_id for c in cs}, "refreshes of horror fans"
    )
    users = Counter(c.user_id for _, c in commands)
    assert set(users) == horror  # every horror fan, and no one else
    assert set(users.values()) == {1}  # the upsert and the vector made one refresh each
    assert all(c.mode == "refresh" and "new-horror-1" in c.cause_ids for _, c in commands)
    # Nothing was deleted or rewritten: every cached list is as it was (refresh-ahead).
    store = redis.Redis.from_url(world.settings.redis_url)
    for user, raw in world.seeded.items():
        assert store.get(USER_CANDIDATES.key(user_id=user)) == raw
    store.close()


def test_a_thousand_upserts_of_one_item_make_one_refresh_per_affected_key(world: World) -> None:
    item, vector = new_horror_film(world, "new-horror-2")
    horror = set(world.fans["horror"])
    start = end_offsets(world.settings, CACHE_INVALIDATIONS.name)
    producer = bulk_producer(world.settings)
    produce_event(producer, CATALOG_VECTORS, vector)
    flush(producer)
    wait_commands(
        world, start, lambda cs: horror <= {c.user_id for c in cs}, "the vector's own refreshes"
    )
    start = end_offsets(world.settings, CACHE_INVALIDATIONS.name)
    t0 = time.monotonic()
    for i in range(1000):
        produce_event(producer, CATALOG_ITEMS, item.model_copy(update={"popularity_hint": i}))
    flush(producer)
    assert time.monotonic() - t0 < 1.0, "the burst took over a second: not the scenario"
    commands = wait_commands(
        world, start, lambda cs: horror <= {c.user_id for c in cs}, "refreshes after the burst"
    )
    users = Counter(c.user_id for _, c in commands)
    assert set(users) == horror
    assert set(users.values()) == {1}, users


def test_a_removed_item_is_never_served_once_its_removal_is_processed(world: World) -> None:
    store = redis.Redis.from_url(world.settings.redis_url)
    holders = {
        u: candidate_codec.decode(store.get(USER_CANDIDATES.key(user_id=u)))
        for u in world.fans["kids"]
    }
    gone = Counter(c.item_id for cand in holders.values() for c in cand.items).most_common(1)[0][0]
    holding = {u for u, cand in holders.items() if gone in {c.item_id for c in cand.items}}
    start = end_offsets(world.settings, CACHE_INVALIDATIONS.name)
    producer = bulk_producer(world.settings)
    produce_event(producer, CATALOG_ITEMS, CatalogItem(item_id=gone, op="remove"))
    flush(producer)
    wait_for(lambda: store.sismember(REMOVED_ITEMS.key(), gone), 30, "the removal to be marked")

    # From here on serving's read path (its Redis adapter and re-ranking) never returns it,
    # although the precomputed lists still hold it: no refresh has run (none acts on them here).
    async def served(users: set[str]) -> dict[str, list[str]]:
        client = aioredis.from_url(world.settings.redis_url)
        try:
            removed = await RedisPopular(client).removed()
        finally:
            await client.aclose()
        out = {}
        for user in users:
            scored = [(c.item_id, c.score) for c in holders[user].items]
            top = rerank(scored, 10, removed, lambda i: ItemInfo(item_id=i), 1.0)
            out[user] = [i for i, _ in top]
        return out

    answers = asyncio.run(served(holding))
    for user in holding:
        raw = store.get(USER_CANDIDATES.key(user_id=user))
        assert gone in {c.item_id for c in candidate_codec.decode(raw).items}
        assert gone not in answers[user]
    # And the users who held it get a refresh for the removal.
    commands = wait_commands(
        world,
        start,
        lambda cs: holding <= {c.user_id for c in cs if c.reason == "item_removal"},
        "refreshes of the holders",
    )
    assert {c.user_id for _, c in commands} == holding
    store.close()


def test_a_malformed_message_is_dead_lettered_and_the_worker_goes_on(world: World) -> None:
    start = end_offsets(world.settings, DEAD_LETTERS.name)
    producer = bulk_producer(world.settings)
    producer.produce(CATALOG_VECTORS.name, key=b"broken", value=b"not a vector")
    flush(producer)

    def letters() -> list[DeadLetter]:
        from tests.kafka_helpers import read_range

        end = end_offsets(world.settings, DEAD_LETTERS.name)
        rows = read_range(world.settings, DEAD_LETTERS.name, start, end)
        found = [codecs.decode(DEAD_LETTERS, v) for _, v in rows]
        return [d for d in found if d.processor == "invalidation"]

    found = wait_for(letters, 30, "a dead letter from the invalidation worker")
    assert "magic" in found[0].reason and found[0].source_topic == CATALOG_VECTORS.name
    assert world.worker.alive()


def test_a_promotion_refreshes_everyone_within_the_rate_bound(world: World) -> None:
    start = end_offsets(world.settings, CACHE_INVALIDATIONS.name)
    producer = bulk_producer(world.settings)
    change = RegistryChange(kind="ranker", name="ranker", version="v-test", action="promote")
    produce_event(producer, REGISTRY_CHANGES, change)
    flush(producer)
    everyone = {u for fans in world.fans.values() for u in fans}
    commands = wait_commands(
        world, start, lambda cs: everyone <= {c.user_id for c in cs}, "the promotion sweep"
    )
    assert Counter(c.user_id for _, c in commands) == Counter(everyone)
    stamps = [t for t, _ in commands]
    cfg = world.settings.invalidation
    for window in (0.5, 1.0, 2.0):
        assert max_in_any_window(stamps, window) <= max_commands(cfg, window)
    # Spread over time, most active users first.
    assert (
        max(stamps) - min(stamps)
        >= (len(everyone) - cfg.refresh_burst - 1) / (cfg.refresh_rate_per_s) - 0.01
    )
    first = min(commands, key=lambda tc: tc[1].issued_at)[1]
    assert first.user_id == f"docs-fan-{FANS_PER_GENRE - 1}"  # the last to have interacted


def test_a_restart_refreshes_changes_made_while_down_and_replays_no_history(world: World) -> None:
    world.worker.stop()
    start = end_offsets(world.settings, CACHE_INVALIDATIONS.name)
    _, vector = new_horror_film(world, "new-horror-3")
    producer = bulk_producer(world.settings)
    produce_event(producer, CATALOG_VECTORS, vector)
    flush(producer)
    world.worker = WorkerProcess(world.settings, "invalidation", world.group).start()
    horror = set(world.fans["horror"])
    commands = wait_commands(
        world,
        start,
        lambda cs: horror <= {c.user_id for c in cs if "new-horror-3" in c.cause_ids},
        "refreshes for the change made while the worker was down",
    )
    # Exactly those: nothing from before the restart (items, removals, the promotion) again.
    assert Counter(c.user_id for _, c in commands) == Counter(horror)
    assert all(c.cause_ids == ["new-horror-3"] for _, c in commands)
