"""A short-lived response cache with request coalescing.

Responsibilities:
- keep answers for `ttl_s` (bounded to `max_entries`, oldest evicted first), so a burst of
  requests for one user within the TTL costs one ranking;
- coalesce: while one computation for a key is in flight, later callers await the same
  result instead of starting their own (one computation per user in flight);
- never cache a failure, and never cache answers the caller marks uncacheable (degraded ones,
  so that recovery shows at once).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class CoalescingCache(Generic[V]):
    """`get_or_compute(key, compute)`: a cached value, an in-flight one, or a new computation."""

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self.in_flight: dict[Hashable, asyncio.Future[V]] = {}
        self.hits = self.coalesced = self.misses = 0

    def get(self, key: Hashable) -> V | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self.clock() >= expires:
            del self.entries[key]
            return None
        return value

    def put(self, key: Hashable, value: V) -> None:
        if self.ttl_s <= 0:
            return
        self.entries[key] = (self.clock() + self.ttl_s, value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    def invalidate(self, key: Hashable | None = None) -> None:
        if key is None:
            self.entries.clear()
        else:
            self.entries.pop(key, None)

    async def get_or_compute(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[V]],
        cacheable: Callable[[V], bool] = lambda _: True,
    ) -> tuple[V, str]:
        """The value and where it came from: 'hit', 'coalesced' or 'computed'."""
        value = self.get(key)
        if value is not None:
            self.hits += 1
            return value, "hit"
        pending = self.in_flight.get(key)
        if pending is not None:
            self.coalesced += 1
            return await asyncio.shield(pending), "coalesced"
        self.misses += 1
        # The computation runs as its own task: a caller that goes away (a client disconnect
        # cancels its handler) does not cancel the answer the coalesced callers wait for.
        task = asyncio.ensure_future(compute())
        self.in_flight[key] = task
        task.add_done_callback(lambda t: self._done(key, t, cacheable))
        return await asyncio.shield(task), "computed"

    def _done(self, key: Hashable, task: asyncio.Future[V], cacheable: Callable[[V], bool]) -> None:
        if self.in_flight.get(key) is task:
            del self.in_flight[key]
        if task.cancelled() or task.exception() is not None:
            return
        value = task.result()
        if cacheable(value):
            self.put(key, value)
