"""A small circuit breaker for asyncio callers of one dependency (the LLM provider).

Responsibilities:
- count consecutive failures; after `failures` of them the breaker opens and callers fail
  at once with `LLMBreakerOpen` instead of waiting on a provider known to be down;
- after `reset_s`, let exactly one trial call through (half-open): its success closes the
  breaker, its failure opens it for another `reset_s`; other callers keep failing fast;
- report state changes to a callback (metrics, logs).

Our own class rather than pybreaker (ADR 0060): pybreaker's async path (`call_async`) runs on
tornado coroutines under a threading lock, and its half-open state admits every concurrent
caller, so 16 enricher tasks would all wait out the timeout of a provider that still hangs.
Outcomes that say nothing about the provider's health (429, 4xx, cancellation) are neutral.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from llm.errors import LLMBreakerOpen


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Use: `breaker.before_call()`, then exactly one of `success()`, `failure()`, `neutral()`."""

    def __init__(
        self,
        failures: int,
        reset_s: float,
        on_change: Callable[[BreakerState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self.on_change = on_change
        self.clock = clock
        self.state = BreakerState.CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.trips = 0
        self._probe_in_flight = False

    def before_call(self) -> None:
        """Admit a call or raise `LLMBreakerOpen` (no I/O, so it cannot block)."""
        if self.state is BreakerState.CLOSED:
            return
        if self.state is BreakerState.OPEN:
            wait = self.opened_at + self.reset_s - self.clock()
            if wait > 0:
                raise LLMBreakerOpen(wait)
            self._set(BreakerState.HALF_OPEN)
        if self._probe_in_flight:  # half-open: one trial call at a time
            raise LLMBreakerOpen(0.0)
        self._probe_in_flight = True

    def success(self) -> None:
        self._probe_in_flight = False
        self.consecutive = 0
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def failure(self) -> None:
        self._probe_in_flight = False
        self.consecutive += 1
        if self.state is BreakerState.HALF_OPEN or self.consecutive >= self.failures:
            self.opened_at = self.clock()
            if self.state is not BreakerState.OPEN:
                self.trips += 1
                self._set(BreakerState.OPEN)

    def neutral(self) -> None:
        """The call ended without telling whether the provider is healthy (429, cancelled)."""
        self._probe_in_flight = False

    def _set(self, state: BreakerState) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(state)
