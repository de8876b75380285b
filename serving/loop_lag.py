"""How late the worker's event loop runs right now.

A ticker task asks to wake every `interval_s`; how late it wakes (or, while it is overdue, how
overdue it is) is the time a request that has just arrived already waited inside uvicorn
before any handler saw it. The front door refuses on it (`serving.front_door`), and the core
does not blame a dependency for a timeout the loop's own lag caused (`serving.core`).
A few lines over asyncio, so written here rather than imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable


class LoopLag:
    """The event loop's current lag in seconds (0 while it keeps up)."""

    def __init__(
        self, interval_s: float = 0.01, observe: Callable[[float], None] | None = None
    ) -> None:
        self.interval_s = interval_s
        self.observe = observe
        self.last_lag = 0.0
        self.due = time.monotonic() + interval_s
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._tick(), name="loop-lag")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def _tick(self) -> None:
        while True:
            self.due = time.monotonic() + self.interval_s
            await asyncio.sleep(self.interval_s)  # the measurement itself: how late this wakes
            self.last_lag = max(0.0, time.monotonic() - self.due)
            if self.observe is not None:
                self.observe(self.last_lag)

    def now(self) -> float:
        if self.task is None or self.task.done():
            return 0.0  # not measuring (not started, or stopped): claim nothing
        return max(self.last_lag, time.monotonic() - self.due)
