"""The enricher's bounded, deduplicating priority queue of enrichment requests.

Responsibilities:
- one entry per dedupe key: a request for a key already waiting is merged into it (the
  higher priority, the later expiry and the newer context win) instead of queued twice;
- highest priority first (ties: the earliest queued);
- a bound: when full, the lowest-priority entry is shed (possibly the newcomer itself), so a
  10x burst costs the least useful work, never memory;
- expiry: a request past its `expires_at` is dropped when it would be queued, served, or
  swept (`sweep()`), never sent to the provider;
- counts of each outcome (`QueueStats`), and its depth.

Single event loop, no locks: `get()` waits on an `asyncio.Event`. Both heaps use lazy
deletion (an entry's version must match), and are rebuilt when mostly dead.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from streamrec.topics import EnrichRequest
from streamrec.topics.base import utcnow

PutOutcome = Literal["queued", "merged", "stale", "shed"]


@dataclass
class QueueStats:
    queued: int = 0  # new keys taken in
    merged: int = 0  # duplicates folded into a waiting entry
    stale: int = 0  # dropped past expires_at (at put, get or sweep)
    shed: int = 0  # dropped by the bound (lowest priority first)
    requeued: int = 0  # put back after the provider could not serve them


@dataclass
class _Entry:
    request: EnrichRequest
    priority: float
    seq: int
    version: int


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return None  # no expiry wins: the work stays useful
    return max(a, b)


class EnrichQueue:
    def __init__(self, maxsize: int, clock: Callable[[], datetime] = utcnow) -> None:
        self.maxsize = maxsize
        self.clock = clock
        self.stats = QueueStats()
        self._entries: dict[str, _Entry] = {}
        self._best: list[tuple[float, int, str, int]] = []  # (-priority, seq, key, version)
        self._worst: list[tuple[float, int, str, int]] = []  # (priority, seq, key, version)
        self._seq = itertools.count()
        self._versions = itertools.count()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._entries)

    def _expired(self, request: EnrichRequest) -> bool:
        return request.expires_at is not None and request.expires_at <= self.clock()

    def _push(self, key: str, entry: _Entry) -> None:
        self._entries[key] = entry
        heapq.heappush(self._best, (-entry.priority, entry.seq, key, entry.version))
        heapq.heappush(self._worst, (entry.priority, entry.seq, key, entry.version))
        if len(self._best) > 4 * len(self._entries) + 64:
            self._rebuild()
        self._ready.set()

    def _rebuild(self) -> None:
        self._best = [(-e.priority, e.seq, k, e.version) for k, e in self._entries.items()]
        self._worst = [(e.priority, e.seq, k, e.version) for k, e in self._entries.items()]
        heapq.heapify(self._best)
        heapq.heapify(self._worst)

    def _live(self, item: tuple[float, int, str, int]) -> bool:
        entry = self._entries.get(item[2])
        return entry is not None and entry.version == item[3]

    def put(self, request: EnrichRequest) -> PutOutcome:
        if self._expired(request):
            self.stats.stale += 1
            return "stale"
        waiting = self._entries.get(request.key)
        if waiting is not None:
            old = waiting.request
            merged = request.model_copy(
                update={
                    "priority": max(old.priority, request.priority),
                    "expires_at": _later(old.expires_at, request.expires_at),
                    "requested_at": max(old.requested_at, request.requested_at),
                }
            )
            self._push(
                request.key,
                _Entry(merged, merged.priority, waiting.seq, next(self._versions)),
            )
            self.stats.merged += 1
            return "merged"
        if len(self._entries) >= self.maxsize:
            lowest = self._peek_worst()
            if lowest is not None and lowest.priority >= request.priority:
                self.stats.shed += 1  # the newcomer is the least useful: shed it
                return "shed"
            if lowest is not None:
                del self._entries[lowest.request.key]
                self.stats.shed += 1
        self._push(
            request.key,
            _Entry(request, request.priority, next(self._seq), next(self._versions)),
        )
        self.stats.queued += 1
        return "queued"

    def requeue(self, request: EnrichRequest) -> PutOutcome:
        """Put back a request the provider could not serve; it keeps its expiry."""
        outcome = self.put(request)
        if outcome == "queued":
            self.stats.queued -= 1  # not new work
            self.stats.requeued += 1
        return outcome

    def _peek_worst(self) -> _Entry | None:
        while self._worst and not self._live(self._worst[0]):
            heapq.heappop(self._worst)
        return self._entries[self._worst[0][2]] if self._worst else None

    def pop_nowait(self) -> EnrichRequest | None:
        """The most useful live request, skipping (and counting) expired ones."""
        while self._best:
            item = heapq.heappop(self._best)
            if not self._live(item):
                continue
            entry = self._entries.pop(item[2])
            if self._expired(entry.request):
                self.stats.stale += 1
                continue
            return entry.request
        self._ready.clear()
        return None

    async def get(self) -> EnrichRequest:
        while True:
            request = self.pop_nowait()
            if request is not None:
                return request
            await self._ready.wait()

    def sweep(self) -> int:
        """Drop every expired entry now (keeps the depth honest); returns how many."""
        now = self.clock()
        dead = [
            k
            for k, e in self._entries.items()
            if e.request.expires_at is not None and e.request.expires_at <= now
        ]
        for k in dead:
            del self._entries[k]
        self.stats.stale += len(dead)
        if dead:
            self._rebuild()
        return len(dead)
