"""Deadlines derived from a request's budget.

Responsibilities:
- `Deadline`: the absolute end of a request (monotonic clock), what is left of it, and the
  share of it a dependency call may use (`for_dependency`), so no call waits without bound;
- `within`: await a coroutine under a timeout, turning a miss into `DependencyTimeout`.

`within` uses `asyncio.timeout` (one timer handle, the awaitable runs in the caller's task)
rather than `asyncio.wait_for`, which on Python 3.11 wraps every call in a task of its own:
a task per dependency call was a visible share of the event loop's CPU per request
(ADR 0055).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

from streamrec.serving.errors import DependencyTimeout

T = TypeVar("T")


class Deadline:
    """The end of one request's budget."""

    __slots__ = ("budget_s", "end", "start")

    def __init__(self, budget_ms: float, start: float | None = None) -> None:
        self.start = time.monotonic() if start is None else start
        self.budget_s = budget_ms / 1000.0
        self.end = self.start + self.budget_s

    def remaining_s(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.start) * 1000.0

    def for_dependency(self, share: float, cap_ms: float, reserve_ms: float = 0.0) -> float:
        """Seconds a dependency call may take: `share` of what is left after `reserve_ms`,
        never more than `cap_ms`."""
        left = max(0.0, self.remaining_s() - reserve_ms / 1000.0)
        return min(left * share, cap_ms / 1000.0)


async def within(dependency: str, awaitable: Awaitable[T], timeout_s: float) -> T:
    """`awaitable`'s result, or `DependencyTimeout` once `timeout_s` has passed."""
    if timeout_s <= 0:
        if asyncio.iscoroutine(awaitable):
            awaitable.close()  # never started: close it so Python does not warn
        raise DependencyTimeout(dependency, "no budget left")
    try:
        async with asyncio.timeout(timeout_s):
            return await awaitable
    except TimeoutError:
        raise DependencyTimeout(dependency, f"no answer within {timeout_s * 1000:.1f} ms") from None
