"""Stampede protection for the response cache: early probabilistic refresh (XFetch).

Responsibilities:
- `should_refresh_early`: XFetch (Vattani, Chierichetti, Lowenstein, "Optimal Probabilistic
  Cache Stampede Prevention", VLDB 2015): a reader recomputes before expiry with a
  probability that rises as expiry nears and with how long the value takes to compute, so
  a hot key is recomputed once, ahead of its expiry, instead of by a herd at expiry;
- `XFetchCache`: `serving.cache.CoalescingCache` (one computation per key in flight) plus
  XFetch on every hit: the recomputation runs in the background and the caller gets the
  cached value at once; and `refresh(key, compute)` for refresh-ahead on an invalidation
  processor's `RefreshCommand`: recompute and swap in, the old value serving meanwhile.

The serving worker's cache can be an `XFetchCache` where it builds a `CoalescingCache`
(same constructor and `get_or_compute`, plus `beta`).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

from streamrec.serving.cache import CoalescingCache

V = TypeVar("V")


def should_refresh_early(
    now: float,
    expires_at: float,
    delta_s: float,
    beta: float = 1.0,
    rand: Callable[[], float] = random.random,
) -> bool:
    """XFetch: True when `now - delta * beta * ln(U)` reaches the expiry (U uniform in (0, 1]).

    The chance of refreshing at remaining time r is exp(-r / (delta * beta)): negligible
    long before expiry, rising steeply over the last few computation times.
    """
    if delta_s <= 0 or beta <= 0:
        return now >= expires_at
    u = max(rand(), 1e-300)  # random() may return 0.0; ln(0) is -inf
    return now - delta_s * beta * math.log(u) >= expires_at


class XFetchCache(CoalescingCache[V]):
    """A coalescing TTL cache whose hot keys are recomputed early, once, in the background."""

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        beta: float = 1.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(ttl_s, max_entries, clock)
        self.beta = beta
        self.rand = rand
        self.deltas: dict[Hashable, float] = {}
        self.refreshes = 0

    async def get_or_compute(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[V]],
        cacheable: Callable[[V], bool] = lambda _: True,
    ) -> tuple[V, str]:
        entry = self.entries.get(key)
        if entry is not None and key not in self.in_flight:
            now = self.clock()
            expires, _ = entry
            delta = self.deltas.get(key, 0.0)
            if now < expires and should_refresh_early(now, expires, delta, self.beta, self.rand):
                self._start(key, compute, cacheable)  # callers keep the cached value meanwhile
        return await super().get_or_compute(key, self._timed(key, compute), cacheable)

    def refresh(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[V]],
        cacheable: Callable[[V], bool] = lambda _: True,
    ) -> asyncio.Future[V]:
        """Refresh-ahead: recompute `key` now and swap the result in; readers keep getting the
        old value until then. A computation already in flight for `key` is reused."""
        pending = self.in_flight.get(key)
        if pending is not None:
            return pending
        self.refreshes += 1
        return self._start(key, compute, cacheable)

    def put(self, key: Hashable, value: V) -> None:
        super().put(key, value)
        if len(self.deltas) > 2 * self.max_entries:  # forget computation times of evicted keys
            self.deltas = {k: d for k, d in self.deltas.items() if k in self.entries}

    def _timed(
        self, key: Hashable, compute: Callable[[], Awaitable[V]]
    ) -> Callable[[], asyncio.Future[V]]:
        """`compute` started as a future whose successful end records its time. A compute
        that returns a future already (the request batcher's) is not wrapped in a task: a
        task per request cost ~15 us of the event loop's time, on every answer."""

        def start() -> asyncio.Future[V]:
            started = self.clock()
            future = asyncio.ensure_future(compute())

            def timed(done: asyncio.Future[V]) -> None:
                if not done.cancelled() and done.exception() is None:
                    self.deltas[key] = self.clock() - started

            future.add_done_callback(timed)
            return future

        return start

    def _start(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[V]],
        cacheable: Callable[[V], bool],
    ) -> asyncio.Future[V]:
        task = self._timed(key, compute)()
        self.in_flight[key] = task
        task.add_done_callback(lambda t: self._done(key, t, cacheable))
        return task
