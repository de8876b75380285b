"""StateCache: bounded, refuses entries older than its last invalidation, and is dropped by
faust's rebalance signals (a real faust App; its signals need no broker)."""

from __future__ import annotations

import asyncio

import faust

from streamrec.processors.state_cache import StateCache


def test_get_returns_what_put_many_stored_and_counts_hits():
    cache: StateCache[str] = StateCache(10)
    assert cache.get(b"a") is None
    cache.put_many({b"a": "A", b"b": "B"}, cache.epoch)
    assert (cache.get(b"a"), cache.get(b"b"), cache.get(b"c")) == ("A", "B", None)
    assert (cache.hits, cache.misses) == (2, 2)


def test_entries_read_before_an_invalidation_are_not_stored():
    cache: StateCache[str] = StateCache(10)
    epoch = cache.epoch  # a batch starts
    cache.put_many({b"a": "A"}, epoch)
    cache.invalidate()  # a rebalance during the batch
    cache.put_many({b"b": "B"}, epoch)  # the batch ends
    assert len(cache) == 0 and cache.get(b"a") is None and cache.get(b"b") is None
    cache.put_many({b"b": "B"}, cache.epoch)
    assert cache.get(b"b") == "B"


def test_the_oldest_entries_go_first_and_a_rewritten_one_is_newest():
    cache: StateCache[int] = StateCache(3)
    cache.put_many({b"1": 1, b"2": 2, b"3": 3}, 0)
    cache.put_many({b"1": 10, b"4": 4}, 0)  # 1 rewritten: 2 is now the oldest
    assert len(cache) == 3
    assert [cache.get(k) for k in (b"1", b"2", b"3", b"4")] == [10, None, 3, 4]


def test_zero_entries_disables_it():
    cache: StateCache[int] = StateCache(0)
    cache.put_many({b"1": 1}, cache.epoch)
    assert len(cache) == 0 and cache.get(b"1") is None


def test_revocation_and_assignment_drop_everything(tmp_path):
    app = faust.App("t-state-cache", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))
    cache: StateCache[int] = StateCache(10)
    cache.attach(app)

    async def rebalance(signal) -> None:
        await signal.send(set())

    cache.put_many({b"1": 1}, cache.epoch)
    before = cache.epoch
    asyncio.run(rebalance(app.on_partitions_revoked))
    assert len(cache) == 0 and cache.epoch == before + 1
    cache.put_many({b"1": 1}, cache.epoch)
    asyncio.run(rebalance(app.on_partitions_assigned))
    assert len(cache) == 0 and cache.epoch == before + 2
