"""The invalidation processor's batch logic with in-memory ports: what reaches Redis and
cache.invalidations, in which order, for each input topic; dead letters for bad input."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np

from streamrec.infra.settings import InvalidationSettings
from streamrec.invalidation.engine import Invalidator
from streamrec.processors.invalidation import InvalidationProcessor
from streamrec.topics import (
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
    candidate_codec,
)
from streamrec.topics.stores import REMOVED_ITEMS, USER_CANDIDATES, Candidate, CandidateList
from tests.unit.processors.fakes import AsyncLetters, Offsets

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
STATS = "streamrec:invalidation:test"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Redis:
    """The commands the processor sends, kept in dicts; `log` records their order."""

    def __init__(self, log: list[str]) -> None:
        self.sets: dict[str, set[str]] = {}
        self.strings: dict[str, bytes] = {}
        self.hashes: dict[str, dict[str, int]] = {}
        self.log = log

    async def sadd(self, name: str, *values: str) -> int:
        self.log.append(f"sadd {' '.join(values)}")
        self.sets.setdefault(name, set()).update(values)
        return len(values)

    async def srem(self, name: str, *values: str) -> int:
        self.log.append(f"srem {' '.join(values)}")
        self.sets.setdefault(name, set()).difference_update(values)
        return len(values)

    async def delete(self, *names: str) -> int:
        self.log.append(f"delete {' '.join(sorted(names))}")
        return sum(self.strings.pop(n, None) is not None for n in names)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return [self.strings.get(k) for k in keys]

    async def hset(self, name: str, *, mapping: Mapping[str, int]) -> int:
        self.hashes.setdefault(name, {}).update(mapping)
        return len(mapping)


class Limiter:
    def __init__(self) -> None:
        self.acquired = 0

    async def acquire(self) -> None:
        self.acquired += 1


class Gauge:
    def __init__(self) -> None:
        self.value = -1.0

    def set(self, value: float) -> None:
        self.value = value


class World:
    def __init__(self, **overrides: Any) -> None:
        cfg = InvalidationSettings(
            window_s=0.5, max_delay_s=3.0, await_index_s=0.0, thresholds_max_age_s=0.0
        ).model_copy(update=overrides)
        self.clock = Clock()
        self.log: list[str] = []
        self.redis = Redis(self.log)
        self.sent: list[RefreshCommand] = []
        self.limiter = Limiter()
        self.letters = AsyncLetters()
        self.engine = Invalidator(cfg, clock=self.clock)
        self.applied: dict[tuple[str, int], int] = {}
        self.processor = InvalidationProcessor(
            self.engine,
            self.redis,
            self.send,
            self.limiter,
            self.letters,
            STATS,
            self.applied,
            now=lambda: NOW,
            pending_gauge=Gauge(),
            sweep_gauge=Gauge(),
        )
        self.items = Offsets(CATALOG_ITEMS)
        self.vectors = Offsets(CATALOG_VECTORS)
        self.events = Offsets(EVENTS_INTERACTIONS)
        self.notices = Offsets(CANDIDATES)
        self.changes = Offsets(REGISTRY_CHANGES)

    async def send(self, command: RefreshCommand) -> None:
        self.log.append(f"send {command.user_id}")
        self.sent.append(command)

    async def hold(self, user: str, *items: str) -> None:
        """`user`'s candidate list holds `items` (stored, then announced)."""
        cand = CandidateList(
            user_id=user,
            model_version="v1",
            items=[Candidate(item_id=i, score=1.0, sources=["content"]) for i in items],
        )
        self.redis.strings[USER_CANDIDATES.key(user_id=user)] = candidate_codec.encode(cand)
        notice = CandidatesUpdated(user_id=user, count=len(items), model_version="v1")
        await self.processor.on_candidates([self.notices.event(notice)])

    def vector(self, item: str, values: list[float]) -> Any:
        array = np.asarray(values, dtype=np.float32)
        event = ItemVector(
            item_id=item, model_version="m", content_hash=f"h-{item}", vector=array.tobytes()
        )
        return self.vectors.event(event)

    async def drain(self) -> list[RefreshCommand]:
        before = len(self.sent)
        while await self.processor.send_next():
            pass
        return self.sent[before:]


def _interaction(user: str, item: str, n: int) -> Interaction:
    ts = datetime.fromtimestamp(880_000_000 + n, UTC)
    return Interaction(event_id=f"{user}-{item}-{n}", user_id=user, item_id=item, ts=ts)


async def test_a_removal_is_marked_at_once_and_refreshes_the_holders_after_the_window():
    w = World()
    await w.hold("alice", "gone", "kept")
    await w.hold("bob", "kept")
    await w.processor.on_items([w.items.event(CatalogItem(item_id="gone", op="remove"))])
    assert w.redis.sets[REMOVED_ITEMS.key()] == {"gone"}
    assert await w.processor.tick() == 0 and w.sent == []  # the window is still open
    w.clock.t += 0.6
    assert await w.processor.tick() == 1
    assert w.processor.wake.is_set()
    (command,) = await w.drain()
    assert (command.user_id, command.reason, command.mode) == ("alice", "item_removal", "refresh")
    assert command.cause_ids == ["gone"] and command.issued_at == NOW
    assert w.limiter.acquired == 1
    assert w.log == ["sadd gone", "send alice"]
    stats = w.redis.hashes[STATS]
    assert stats["passes"] == 1 and stats["pending"] == 1 and stats["idle"] == 0


async def test_an_upsert_brings_a_removed_item_back():
    w = World()
    await w.processor.on_items(
        [
            w.items.event(CatalogItem(item_id="a", op="remove")),
            w.items.event(CatalogItem(item_id="b", op="remove")),
        ]
    )
    await w.processor.on_items([w.items.event(CatalogItem(item_id="a", title="Back"))])
    assert w.redis.sets[REMOVED_ITEMS.key()] == {"b"}
    assert w.log == ["sadd a b", "srem a"]


async def test_a_new_vector_refreshes_the_users_it_is_near():
    w = World(neighbour_rank=2)
    await w.processor.on_vectors(
        [
            w.vector("comedy", [1.0, 0.0]),
            w.vector("farce", [1.0, 0.05]),
            w.vector("horror", [0.0, 1.0]),
        ]
    )
    await w.processor.on_interactions(
        [
            w.events.event(_interaction("clown-fan", "comedy", 1)),
            w.events.event(_interaction("ghost-fan", "horror", 2)),
        ]
    )
    w.clock.t += 0.6
    await w.processor.tick()  # the seeding vectors' own pass
    await w.drain()
    # Second nearest for the horror fan (after horror itself); far from the comedy fan's two.
    await w.processor.on_vectors([w.vector("scream", [0.1, 1.0])])
    w.clock.t += 0.6
    assert await w.processor.tick() == 1
    (command,) = await w.drain()
    assert (command.user_id, command.reason, command.cause_ids) == (
        "ghost-fan",
        "vector",
        ["scream"],
    )


async def test_a_vector_tombstone_is_a_removal_for_the_holders():
    w = World()
    await w.processor.on_vectors([w.vector("x", [1.0, 0.0])])
    await w.hold("carol", "x")
    w.clock.t += 0.6
    await w.processor.tick()
    await w.drain()
    await w.processor.on_vectors([w.vectors.raw(None, key=b"x")])
    w.clock.t += 0.6
    await w.processor.tick()
    (command,) = await w.drain()
    assert (command.user_id, command.reason) == ("carol", "item_removal")
    assert w.letters.got == []  # a tombstone is not a malformed message


async def test_malformed_messages_are_dead_lettered_and_the_rest_applied():
    w = World()
    await w.processor.on_items(
        [
            w.items.raw(b"not json", partition=2),
            w.items.event(CatalogItem(item_id="z", op="remove")),
        ]
    )
    await w.processor.on_vectors([w.vectors.raw(b"\x00bad", key=b"v")])
    await w.processor.on_interactions([w.events.raw(b"{}")])
    await w.processor.on_candidates([w.notices.raw(b"[]")])
    await w.processor.on_registry([w.changes.raw(b'{"kind": "nope"}')])
    topics = [letter.source_topic for letter in w.letters.got]
    assert topics == [
        "catalog.items",
        "catalog.vectors",
        "events.interactions",
        "candidates",
        "registry.changes",
    ]
    first = w.letters.got[0]
    assert (first.partition, first.offset, first.processor) == (2, 0, "invalidation")
    assert w.redis.sets[REMOVED_ITEMS.key()] == {"z"}


async def test_events_the_start_up_state_holds_are_skipped():
    w = World()
    w.applied[("catalog.items", 0)] = 1  # offset 0 was applied while rebuilding the state
    await w.processor.on_items(
        [
            w.items.event(CatalogItem(item_id="old", op="remove")),
            w.items.event(CatalogItem(item_id="new", op="remove")),
        ]
    )
    assert w.redis.sets[REMOVED_ITEMS.key()] == {"new"}


async def test_a_list_gone_from_redis_or_unreadable_holds_nothing():
    w = World()
    await w.hold("dave", "x")
    await w.hold("erin", "x")
    del w.redis.strings[USER_CANDIDATES.key(user_id="dave")]
    w.redis.strings[USER_CANDIDATES.key(user_id="erin")] = b"{broken"
    notices = [CandidatesUpdated(user_id=u, count=0, model_version="v1") for u in ("dave", "erin")]
    await w.processor.on_candidates([w.notices.event(n) for n in notices])
    # Neither is refreshed for x any more; an unreadable list's next rewrite corrects it.
    assert w.engine.reverse.users_of("x") == set()
    await w.processor.on_items([w.items.event(CatalogItem(item_id="x", op="remove"))])
    w.clock.t += 0.6
    await w.processor.tick()
    assert await w.drain() == []
    assert w.letters.got == []


async def test_a_promotion_sweeps_every_user_most_active_first_and_publish_is_ignored():
    w = World()
    await w.processor.on_interactions(
        [
            w.events.event(_interaction("early", "i", 1)),
            w.events.event(_interaction("late", "i", 9)),
        ]
    )
    publish = RegistryChange(kind="ranker", name="r", version="v2", action="publish")
    await w.processor.on_registry([w.changes.event(publish)])
    assert not w.processor.wake.is_set() and await w.drain() == []
    promote = RegistryChange(kind="ranker", name="r", version="v2", action="promote")
    await w.processor.on_registry([w.changes.event(promote)])
    assert w.processor.wake.is_set()
    commands = await w.drain()
    assert [(c.user_id, c.reason) for c in commands] == [
        ("late", "model_promotion"),
        ("early", "model_promotion"),
    ]
    assert commands[0].cause_ids == ["ranker:v2"] and w.limiter.acquired == 2
    await w.processor.tick()
    assert w.redis.hashes[STATS]["idle"] == 1


async def test_broadcast_mode_deletes_the_keys_then_sends_delete_commands_at_once():
    w = World(mode="broadcast")
    await w.hold("frank", "x")
    await w.hold("gina", "x")
    await w.processor.on_items([w.items.event(CatalogItem(item_id="x", op="remove"))])
    assert w.log[0] == "sadd x"
    assert w.log[1] == "delete cand:frank cand:gina"
    assert sorted(w.log[2:]) == ["send frank", "send gina"]
    assert {c.mode for c in w.sent} == {"delete"}
    assert w.limiter.acquired == 0  # no rate bound in broadcast mode
    assert USER_CANDIDATES.key(user_id="frank") not in w.redis.strings
