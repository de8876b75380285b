"""The enricher's queue: dedupe per key, priority order, the bound, expiry."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from streamrec.llm.work_queue import EnrichQueue
from streamrec.topics import EnrichRequest

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def req(key: str, priority: float = 0.0, ttl_s: float | None = 60, **ctx: str) -> EnrichRequest:
    return EnrichRequest(
        key=key,
        kind="item_description",
        item_id=key,
        priority=priority,
        context=ctx,
        requested_at=T0,
        expires_at=None if ttl_s is None else T0 + timedelta(seconds=ttl_s),
    )


def drain(q: EnrichQueue) -> list[str]:
    out = []
    while (r := q.pop_nowait()) is not None:
        out.append(r.key)
    return out


def test_highest_priority_first_then_arrival_order() -> None:
    q = EnrichQueue(10, Clock())
    for key, p in [("a", 1), ("b", 5), ("c", 1), ("d", 3)]:
        q.put(req(key, p))
    assert drain(q) == ["b", "d", "a", "c"]


def test_a_duplicate_key_is_merged_keeping_the_best_of_both() -> None:
    q = EnrichQueue(10, Clock())
    assert q.put(req("a", 1, ttl_s=10)) == "queued"
    q.put(req("b", 2))
    assert q.put(req("a", 3, ttl_s=100, title="new")) == "merged"
    assert len(q) == 2
    first = q.pop_nowait()
    assert first is not None and first.key == "a" and first.priority == 3
    assert first.expires_at == T0 + timedelta(seconds=100) and first.context == {"title": "new"}
    assert drain(q) == ["b"]
    assert q.stats.merged == 1 and q.stats.queued == 2


def test_a_full_queue_sheds_the_lowest_priority() -> None:
    q = EnrichQueue(3, Clock())
    for key, p in [("a", 1), ("b", 2), ("c", 3)]:
        q.put(req(key, p))
    assert q.put(req("d", 5)) == "queued"  # evicts a (lowest)
    assert q.put(req("e", 0)) == "shed"  # lower than everything waiting: the newcomer goes
    assert len(q) == 3 and q.stats.shed == 2
    assert drain(q) == ["d", "c", "b"]


def test_expired_requests_are_never_served() -> None:
    clock = Clock()
    q = EnrichQueue(10, clock)
    assert q.put(req("late", ttl_s=-1)) == "stale"
    q.put(req("short", 9, ttl_s=5))
    q.put(req("long", 1, ttl_s=50))
    q.put(req("forever", 0, ttl_s=None))
    clock.now = T0 + timedelta(seconds=10)
    assert drain(q) == ["long", "forever"]
    assert q.stats.stale == 2


def test_sweep_drops_expired_entries_so_the_depth_is_honest() -> None:
    clock = Clock()
    q = EnrichQueue(10, clock)
    for i in range(5):
        q.put(req(f"k{i}", i, ttl_s=i + 1))
    clock.now = T0 + timedelta(seconds=3)
    assert q.sweep() == 3
    assert len(q) == 2 and drain(q) == ["k4", "k3"]


def test_requeue_is_not_new_work() -> None:
    q = EnrichQueue(10, Clock())
    q.put(req("a"))
    r = q.pop_nowait()
    assert r is not None and q.requeue(r) == "queued"
    assert q.stats.queued == 1 and q.stats.requeued == 1 and len(q) == 1


def test_many_merges_keep_the_heaps_bounded() -> None:
    q = EnrichQueue(10, Clock())
    for n in range(1000):
        q.put(req(f"k{n % 5}", n))
    assert len(q) == 5 and len(q._best) < 100
    assert drain(q) == ["k4", "k3", "k2", "k1", "k0"]


async def test_get_waits_for_work() -> None:
    q = EnrichQueue(10, Clock())
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0)  # let it block on the empty queue
    assert not waiter.done()
    q.put(req("a"))
    got = await asyncio.wait_for(waiter, 1)
    assert got.key == "a"
