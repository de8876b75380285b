"""XFetch early refresh and refresh-ahead on the coalescing response cache."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable

from streamrec.serving.xfetch import XFetchCache, should_refresh_early


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_chance_of_an_early_refresh_rises_as_expiry_nears() -> None:
    rng = random.Random(3)
    delta, n = 0.1, 20_000

    def rate(remaining: float) -> float:
        hits = sum(
            should_refresh_early(10.0 - remaining, 10.0, delta, 1.0, rng.random) for _ in range(n)
        )
        return hits / n

    far, near = rate(1.0), rate(0.05)
    assert far < 0.001  # exp(-10): a value is not recomputed long before it expires
    assert abs(near - math.exp(-0.5)) < 0.02  # exp(-r / delta) as the paper gives
    assert should_refresh_early(10.0, 10.0, delta, 1.0, rng.random)  # expired: always


def test_without_a_known_computation_time_only_expiry_refreshes() -> None:
    assert not should_refresh_early(9.99, 10.0, 0.0)
    assert should_refresh_early(10.0, 10.0, 0.0)


def test_a_hot_key_is_recomputed_once_early_and_readers_never_wait() -> None:
    clock = Clock()

    async def run() -> tuple[list[str], int, str]:
        cache: XFetchCache[str] = XFetchCache(ttl_s=10.0, clock=clock, rand=lambda: 1e-6)
        computed = 0
        gate = asyncio.Event()

        async def compute() -> str:
            nonlocal computed
            computed += 1
            if computed > 1:
                await gate.wait()  # the early refresh is slow: readers must not wait for it
            clock.now += 0.5  # each computation "takes" 0.5 s
            return f"v{computed}"

        await cache.get_or_compute("u1", compute)
        clock.now = 9.0  # 1 s before expiry; 0.5 * -ln(1e-6) ~ 6.9 s: refresh early
        sources = [(await cache.get_or_compute("u1", compute))[1] for _ in range(50)]
        assert cache.get("u1") == "v1"  # still the old value while the refresh runs
        gate.set()
        await asyncio.gather(*cache.in_flight.values())
        return sources, computed, cache.get("u1")

    sources, computed, value = asyncio.run(run())
    assert set(sources) == {"hit"} and computed == 2 and value == "v2"


def test_refresh_ahead_swaps_the_new_value_in_and_keeps_serving_the_old_one() -> None:
    clock = Clock()

    async def run() -> None:
        cache: XFetchCache[str] = XFetchCache(ttl_s=10.0, clock=clock, rand=lambda: 1.0)
        await cache.get_or_compute("u1", _const("old"))
        gate = asyncio.Event()

        async def slow_new() -> str:
            await gate.wait()
            return "new"

        task = cache.refresh("u1", slow_new)
        assert cache.refresh("u1", slow_new) is task  # one computation per key in flight
        assert (await cache.get_or_compute("u1", _const("never")))[0] == "old"
        gate.set()
        await task
        assert (await cache.get_or_compute("u1", _const("never")))[0] == "new"
        assert cache.refreshes == 1

    asyncio.run(run())


def _const(value: str) -> Callable[[], Awaitable[str]]:
    async def compute() -> str:
        return value

    return compute
