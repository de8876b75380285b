"""Admission control: a bounded number of requests in flight, bounded waiting rooms per class.

Responsibilities:
- admit a request at once while fewer than `max_in_flight` are being served;
- otherwise queue it in its priority class's waiting room (interactive, prefetch, background),
  each bounded; a full room sheds the request (`Overloaded`: 503 + Retry-After);
- shed the lowest class first: a request that must wait sheds the waiters of every lower class,
  and a request arriving while a higher class waits is shed at once (it would never be served
  within its budget);
- a waiter that has waited its share of the budget is shed too (its answer would be late);
- when a request finishes, hand its slot to the oldest waiter of the highest class.

Nothing queues without bound, and interactive requests are refused only when the interactive
room itself is full.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

from streamrec.serving.errors import Overloaded

PRIORITIES: tuple[str, ...] = ("interactive", "prefetch", "background")


class AdmissionController:
    """Counts requests in flight and keeps one bounded FIFO of waiters per priority class."""

    def __init__(
        self,
        max_in_flight: int,
        room: dict[str, int],
        retry_after_s: int = 1,
        on_shed: Callable[[str, str], None] | None = None,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.room = {p: room.get(p, 0) for p in PRIORITIES}
        self.retry_after_s = retry_after_s
        self.on_shed = on_shed
        self.in_flight = 0
        self.waiting: dict[str, deque[asyncio.Future[None]]] = {p: deque() for p in PRIORITIES}

    def queued(self, priority: str | None = None) -> int:
        if priority is not None:
            return len(self.waiting[priority])
        return sum(len(q) for q in self.waiting.values())

    def _shed(self, priority: str, reason: str) -> Overloaded:
        if self.on_shed is not None:
            self.on_shed(priority, reason)
        return Overloaded(priority, reason, self.retry_after_s)

    def _shed_lower(self, priority: str) -> None:
        for lower in PRIORITIES[PRIORITIES.index(priority) + 1 :]:
            queue = self.waiting[lower]
            while queue:
                victim = queue.popleft()
                if not victim.done():
                    victim.set_exception(self._shed(lower, "shed for a higher class"))

    def _higher_waiting(self, priority: str) -> bool:
        return any(self.waiting[p] for p in PRIORITIES[: PRIORITIES.index(priority)])

    def refusal(self, priority: str) -> str | None:
        """Why a request of this class arriving now would be refused at once; None when it
        would be admitted or may wait (the front door asks too, before any work is done)."""
        if self.in_flight < self.max_in_flight and not self.queued():
            return None
        if self._higher_waiting(priority):
            return "a higher class is waiting"
        if len(self.waiting[priority]) >= self.room[priority]:
            return "waiting room full"
        return None

    async def acquire(self, priority: str, max_wait_s: float) -> None:
        if priority not in self.waiting:
            raise ValueError(f"unknown priority {priority!r}")
        if self.in_flight < self.max_in_flight and not self.queued():
            self.in_flight += 1
            return
        reason = self.refusal(priority)
        if reason is not None:
            raise self._shed(priority, reason)
        queue = self.waiting[priority]
        self._shed_lower(priority)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), max_wait_s)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                return  # the slot was handed over just as the wait ended: keep it
            if waiter.done() and waiter.exception() is not None:
                raise waiter.exception() from None
            waiter.cancel()
            _discard(queue, waiter)
            raise self._shed(priority, "queued past its budget") from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # handed a slot while being cancelled: give it back
            else:
                waiter.cancel()
                _discard(queue, waiter)
            raise

    def release(self) -> None:
        for priority in PRIORITIES:
            queue = self.waiting[priority]
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot passes on: in_flight stays the same
                    return
        self.in_flight -= 1

    @asynccontextmanager
    async def slot(self, priority: str, max_wait_s: float) -> AsyncIterator[None]:
        await self.acquire(priority, max_wait_s)
        try:
            yield
        finally:
            self.release()


def _discard(queue: deque[asyncio.Future[None]], waiter: asyncio.Future[None]) -> None:
    with suppress(ValueError):
        queue.remove(waiter)
