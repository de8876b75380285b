"""The bucket math and the local share of a limit (the Redis-shared path is tested against a
real Redis in tests/integration/serving/test_auth.py)."""

from __future__ import annotations

import asyncio

from streamrec.serving.rate_limit import Rate, RateLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_starts_full_refills_at_its_rate_and_says_how_long_to_wait():
    bucket = TokenBucket(Rate(per_s=2.0, burst=3.0))
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == 0.5  # one token at 2/s
    assert bucket.take(0.5) == 0.0
    assert bucket.take(10.0) == 0.0  # refilled, but never past the burst
    assert bucket.tokens == 2.0


def test_leases_and_shares():
    rate = Rate(per_s=100.0, burst=200.0)
    assert rate.lease(0.05) == 10
    assert Rate(1.0, 5.0).lease(0.05) == 1  # never below one token
    assert rate.share(4) == Rate(25.0, 50.0)
    assert Rate(1.0, 2.0).share(4) == Rate(0.25, 1.0)  # a burst of at least one


def test_without_redis_each_process_allows_its_share_and_refuses_all_buckets_or_none():
    clock = Clock()
    limiter = RateLimiter(None, processes=2, clock=clock)
    key, user = ("key:a", Rate(10.0, 10.0)), ("user:7", Rate(1.0, 4.0))

    async def run() -> list[float | None]:
        return [await limiter.check([key, user]) for _ in range(3)]

    got = asyncio.run(run())
    assert got[:2] == [None, None]  # the user's burst of 4 over 2 processes
    assert got[2] == 2.0  # the user's half rate: 0.5 tokens/s
    # The refused request took nothing from the key's bucket: 5 - 2 left.
    assert limiter._local["key:a"].tokens == 3.0
    clock.now = 2.0
    assert asyncio.run(limiter.check([key, user])) is None
