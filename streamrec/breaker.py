"""The circuit breaker state machine shared by every dependency client (serving's stores and
model, the LLM provider).

Responsibilities:
- count consecutive failures; after `failures` of them the breaker opens and callers are
  refused at once instead of waiting on a dependency known to be down;
- `trip()` opens it at once (a refusal that no retry can fix, e.g. a refused key);
- after `reset_s`, admit exactly one trial call (half-open): its success closes the breaker,
  its failure opens it for another `reset_s`; other callers keep being refused;
- report state changes (0 closed, 1 half-open, 2 open) to a callback for metrics and logs.

Our own small class rather than pybreaker: pybreaker's `call_async` runs on tornado
coroutines under a threading lock, and its half-open state admits every concurrent caller,
so a burst of callers would all wait out the timeout of a dependency that still hangs
(ADR 0041, ADR 0060). Areas wrap it with their own error types (serving.breakers,
llm.breaker).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Use: `retry_in()`; when it admits the call, report exactly one of `success()`,
    `failure()` or `neutral()` afterwards."""

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
        self.trial_in_flight = False

    def retry_in(self) -> float | None:
        """None when the call may go ahead (claiming the one trial when half-open); otherwise
        the seconds until the breaker will admit a trial (0.0: a trial is in flight)."""
        if self.state is BreakerState.CLOSED:
            return None
        if self.state is BreakerState.OPEN:
            wait = self.opened_at + self.reset_s - self.clock()
            if wait > 0:
                return wait
            self._set(BreakerState.HALF_OPEN)
        if self.trial_in_flight:
            return 0.0
        self.trial_in_flight = True
        return None

    def success(self) -> None:
        self.trial_in_flight = False
        self.consecutive = 0
        self._set(BreakerState.CLOSED)

    def failure(self) -> None:
        self.trial_in_flight = False
        self.consecutive += 1
        if self.state is BreakerState.HALF_OPEN or self.consecutive >= self.failures:
            self.opened_at = self.clock()
            if self.state is not BreakerState.OPEN:
                self.trips += 1
            self._set(BreakerState.OPEN)

    def trip(self) -> None:
        """Open now, whatever the count: the dependency refused the call in a way no retry
        fixes (an authentication failure). A trial after `reset_s` tries again."""
        self.trial_in_flight = False
        self.consecutive = max(self.consecutive + 1, self.failures)
        self.opened_at = self.clock()
        self.trips += 1
        self._set(BreakerState.OPEN)

    def neutral(self) -> None:
        """The call ended without telling whether the dependency is healthy (a 429, a
        cancellation): it releases the trial and changes nothing else."""
        self.trial_in_flight = False

    def _set(self, state: BreakerState) -> None:
        if state is not self.state:
            self.state = state
            if self.on_change is not None:
                self.on_change(state)
