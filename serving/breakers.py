"""Circuit breakers, one per dependency (features, candidates, popular, model).

Responsibilities:
- count consecutive failures of one dependency; after `failures` of them the breaker opens
  and calls fail at once with `BreakerOpen` (no waiting on a dependency known to be down);
- after `reset_s` one trial call is let through (half-open): success closes the breaker,
  failure opens it again for another `reset_s`;
- report its state (0 closed, 1 half-open, 2 open) and transitions to the metrics.

Our own small class rather than pybreaker: pybreaker's `call_async` is built on tornado's
coroutines, and its half-open state lets every concurrent caller through, whereas here a
single trial call probes the dependency while the others keep failing fast (ADR 0041).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import TypeVar

from serving.errors import BreakerOpen, DependencyError

T = TypeVar("T")


class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """A breaker for one dependency; `call` runs a coroutine factory through it."""

    def __init__(
        self,
        name: str,
        failures: int = 5,
        reset_s: float = 5.0,
        on_change: Callable[[str, State], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failures = failures
        self.reset_s = reset_s
        self.on_change = on_change
        self.clock = clock
        self.state = State.CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.trial_in_flight = False

    def _set(self, state: State) -> None:
        if state != self.state:
            self.state = state
            if self.on_change is not None:
                self.on_change(self.name, state)

    def allow(self) -> bool:
        """Whether a call may go ahead now (claims the single trial when half-open)."""
        if self.state == State.CLOSED:
            return True
        if self.state == State.OPEN and self.clock() - self.opened_at >= self.reset_s:
            self._set(State.HALF_OPEN)
        if self.state == State.HALF_OPEN and not self.trial_in_flight:
            self.trial_in_flight = True
            return True
        return False

    def success(self) -> None:
        self.consecutive = 0
        self.trial_in_flight = False
        self._set(State.CLOSED)

    def failure(self) -> None:
        self.consecutive += 1
        self.trial_in_flight = False
        if self.state == State.HALF_OPEN or self.consecutive >= self.failures:
            self.opened_at = self.clock()
            self._set(State.OPEN)

    async def call(self, factory: Callable[[], Awaitable[T]]) -> T:
        """Run `factory()` unless open; `DependencyError`s count as failures and propagate."""
        if not self.allow():
            raise BreakerOpen(self.name, "circuit open")
        try:
            result = await factory()
        except DependencyError:
            self.failure()
            raise
        except BaseException:
            self.trial_in_flight = False  # cancelled or a bug: neither proves health nor harm
            raise
        self.success()
        return result
