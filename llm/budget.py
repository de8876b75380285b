"""A retry budget: retries are allowed only as a share of recent first attempts.

Per-call retry limits alone let a fleet multiply its load by `max_attempts` exactly when the
provider is struggling (a retry storm). The budget caps retries over a sliding
window at `min_retries + ratio * first attempts`, as Finagle's RetryBudget does; a retry
beyond it fails at once with `LLMRetryBudgetExhausted`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RetryBudget:
    def __init__(
        self,
        ratio: float,
        min_retries: int,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_retries = min_retries
        self.window_s = window_s
        self.clock = clock
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, now: float) -> None:
        for q in (self._calls, self._retries):
            while q and q[0] <= now - self.window_s:
                q.popleft()

    def record_call(self) -> None:
        self._calls.append(self.clock())

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it."""
        now = self.clock()
        self._trim(now)
        if len(self._retries) >= self.min_retries + self.ratio * len(self._calls):
            return False
        self._retries.append(now)
        return True
