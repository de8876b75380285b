"""Per-user debouncing: many triggers for one user within the window become one rebuild.

A user is due `delay_s` after their FIRST pending trigger (not the last), so a user who
never stops interacting is still rebuilt at least every `delay_s`.
"""

from __future__ import annotations

import time


class Debouncer:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self._pending: dict[str, float] = {}

    def mark(self, user_ids: set[str] | list[str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for u in user_ids:
            self._pending.setdefault(u, now)

    def due(self, now: float | None = None, limit: int = 256) -> list[str]:
        """Users whose window has passed (at most `limit`), removed from the pending set."""
        now = time.monotonic() if now is None else now
        out = [u for u, t in self._pending.items() if now - t >= self.delay_s][:limit]
        for u in out:
            del self._pending[u]
        return out

    def __len__(self) -> int:
        return len(self._pending)
