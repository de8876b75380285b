import asyncio

from streamrec.serving.cache import CoalescingCache


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


async def test_concurrent_requests_for_one_key_compute_once():
    cache: CoalescingCache[int] = CoalescingCache(ttl_s=1.0)
    calls = 0
    gate = asyncio.Event()

    async def compute():
        nonlocal calls
        calls += 1
        await gate.wait()
        return 42

    tasks = [asyncio.create_task(cache.get_or_compute("u1", compute)) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert [v for v, _ in results] == [42] * 10
    assert sorted(s for _, s in results).count("coalesced") == 9


async def test_ttl_expiry_and_uncacheable_values():
    clock = Clock()
    cache: CoalescingCache[int] = CoalescingCache(ttl_s=2.0, clock=clock)

    async def one():
        return 1

    assert (await cache.get_or_compute("a", one))[1] == "computed"
    assert (await cache.get_or_compute("a", one))[1] == "hit"
    clock.t = 2.5
    assert (await cache.get_or_compute("a", one))[1] == "computed"
    await cache.get_or_compute("b", one, cacheable=lambda v: False)
    assert cache.get("b") is None


async def test_a_failure_reaches_every_waiter_and_is_not_cached():
    cache: CoalescingCache[int] = CoalescingCache(ttl_s=1.0)

    async def boom():
        await asyncio.sleep(0)
        raise ValueError("x")

    results = await asyncio.gather(
        cache.get_or_compute("k", boom), cache.get_or_compute("k", boom), return_exceptions=True
    )
    assert all(isinstance(r, ValueError) for r in results)
    assert cache.get("k") is None and not cache.in_flight


async def test_a_cancelled_caller_does_not_cancel_the_shared_computation():
    cache: CoalescingCache[int] = CoalescingCache(ttl_s=1.0)
    gate = asyncio.Event()

    async def compute():
        await gate.wait()
        return 7

    first = asyncio.create_task(cache.get_or_compute("k", compute))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.get_or_compute("k", compute))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert (await second)[0] == 7


def test_bounded_entries():
    cache: CoalescingCache[int] = CoalescingCache(ttl_s=10.0, max_entries=2)
    for k in "abc":
        cache.put(k, 1)
    assert cache.get("a") is None and cache.get("c") == 1
