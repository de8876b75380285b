"""Circuit breakers, one per dependency (features, candidates, popular, model).

The state machine is the shared `streamrec.breaker.CircuitBreaker` (one trial call when
half-open; ADR 0041 says why not pybreaker). This wrapper names the dependency, reports
transitions with that name to the metrics, and runs a coroutine factory through it:
`DependencyError`s count as failures, `BreakerOpen` is raised while it refuses.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from streamrec.breaker import BreakerState
from streamrec.breaker import CircuitBreaker as _Breaker
from streamrec.serving.errors import BreakerOpen, DependencyError

T = TypeVar("T")
State = BreakerState  # the name the serving modules use

__all__ = ["CircuitBreaker", "State"]


class CircuitBreaker(_Breaker):
    """A breaker for one dependency; `call` runs a coroutine factory through it."""

    def __init__(
        self,
        name: str,
        failures: int = 5,
        reset_s: float = 5.0,
        on_change: Callable[[str, State], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        report = (lambda state: on_change(name, state)) if on_change is not None else None
        super().__init__(failures, reset_s, on_change=report, clock=clock)
        self.name = name

    def allow(self) -> bool:
        """Whether a call may go ahead now (claims the single trial when half-open)."""
        return self.retry_in() is None

    def settle(
        self, error: DependencyError | None, blame: Callable[[DependencyError], bool] | None = None
    ) -> None:
        """Report the outcome of one call `allow()` admitted, made outside `call` (the merged
        read settles each of its parts here): as `call` would have counted it."""
        if error is None:
            self.success()
        elif blame is None or blame(error):
            self.failure()
        else:
            self.neutral()

    async def call(
        self,
        factory: Callable[[], Awaitable[T]],
        blame: Callable[[DependencyError], bool] | None = None,
    ) -> T:
        """Run `factory()` unless open; `DependencyError`s count as failures (unless `blame`
        says the dependency was not at fault: then neither) and propagate."""
        if not self.allow():
            raise BreakerOpen(self.name, "circuit open")
        try:
            result = await factory()
        except DependencyError as exc:
            self.settle(exc, blame)
            raise
        except BaseException:
            self.neutral()  # cancelled or a bug: neither proves health nor harm
            raise
        self.settle(None)
        return result
