"""Coalescing refreshes: a short window, a value-ordered queue, and a model-promotion sweep.

Responsibilities:
- collect changes in an open window: many changes to one key become one pending refresh
  that remembers every reason and (a bounded number of) causes;
- when the window closes, move its keys to the ready queue, ordered by value (the most
  recently active users first); a key already waiting there absorbs the new change instead
  of queueing twice;
- hold at most `max_pending` keys: past it, the least valuable new keys are dropped and
  counted (their users still get fresh candidates from their next interaction);
- a model promotion concerns every user: rather than queueing millions of keys it starts
  one sweep over the users (most active first); targeted refreshes go first, the sweep takes
  every `SWEEP_EVERY`-th slot so it always progresses, and a user refreshed by a targeted
  command after the promotion is skipped by the sweep. A second promotion restarts it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# When both a targeted refresh and the sweep are waiting, every 4th slot goes to the sweep.
SWEEP_EVERY = 4
MAX_CAUSES = 16

# The reason a coalesced command carries: the most consequential of the ones it merged.
REASON_ORDER = (
    "item_removal",
    "item_upsert",
    "vector",
    "index_swap",
    "trending",
    "model_promotion",
    "manual",
)


@dataclass
class PendingRefresh:
    """One key's coalesced refresh."""

    user_id: str
    priority: float
    reasons: set[str] = field(default_factory=set)
    cause_ids: list[str] = field(default_factory=list)
    changes: int = 0

    def merge(self, reason: str, cause_id: str | None) -> None:
        self.reasons.add(reason)
        self.changes += 1
        known = cause_id is None or cause_id in self.cause_ids
        if not known and len(self.cause_ids) < MAX_CAUSES:
            self.cause_ids.append(cause_id)

    @property
    def reason(self) -> str:
        return min(self.reasons, key=REASON_ORDER.index)


@dataclass
class CoalescerStats:
    changes: int = 0
    coalesced: int = 0
    dropped: int = 0
    emitted: int = 0
    swept: int = 0


class Coalescer:
    """Open window -> ready queue (by priority) -> `pop()`; plus a sweep for promotions."""

    def __init__(self, max_pending: int, priority_of: Callable[[str], float]) -> None:
        self.max_pending = max_pending
        self.priority_of = priority_of
        self.stats = CoalescerStats()
        self._open: dict[str, PendingRefresh] = {}
        self._ready: dict[str, PendingRefresh] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._sweep: list[str] = []
        self._sweep_pos = 0
        self._sweep_cause: str | None = None
        self._refreshed_since_sweep: set[str] = set()
        self._slot = 0

    # -- collecting ---------------------------------------------------------------------------

    def add(self, user_ids: Iterable[str], reason: str, cause_id: str | None = None) -> int:
        """Record a change affecting `user_ids`; returns how many keys were new to the window."""
        new = 0
        for user in user_ids:
            self.stats.changes += 1
            pending = self._ready.get(user) or self._open.get(user)
            if pending is not None:
                self.stats.coalesced += 1
            else:
                if self.pending >= self.max_pending:
                    self.stats.dropped += 1
                    continue
                pending = self._open[user] = PendingRefresh(user, self.priority_of(user))
                new += 1
            pending.merge(reason, cause_id)
        return new

    def close_window(self) -> int:
        """Move the open window's keys to the ready queue; returns how many moved."""
        moved = len(self._open)
        for user, pending in self._open.items():
            self._ready[user] = pending
            heapq.heappush(self._heap, (-pending.priority, next(self._seq), user))
        self._open = {}
        return moved

    def start_sweep(self, users_by_value: list[str], cause_id: str) -> None:
        """Refresh every user in `users_by_value` order, spread at the emitter's rate."""
        self._sweep = list(users_by_value)
        self._sweep_pos = 0
        self._sweep_cause = cause_id
        self._refreshed_since_sweep = set()

    # -- draining -----------------------------------------------------------------------------

    def pop(self) -> PendingRefresh | None:
        """The next refresh to emit, or None when nothing is ready."""
        self._slot += 1
        sweep_turn = self._slot % SWEEP_EVERY == 0
        if sweep_turn or not self._ready:
            swept = self._pop_sweep()
            if swept is not None:
                return swept
        return self._pop_ready()

    def _pop_ready(self) -> PendingRefresh | None:
        while self._heap:
            _, _, user = heapq.heappop(self._heap)
            pending = self._ready.pop(user, None)
            if pending is not None:
                self.stats.emitted += 1
                if self.sweeping:
                    self._refreshed_since_sweep.add(user)
                return pending
        return None

    def _pop_sweep(self) -> PendingRefresh | None:
        while self._sweep_pos < len(self._sweep):
            user = self._sweep[self._sweep_pos]
            self._sweep_pos += 1
            if user in self._refreshed_since_sweep:
                continue
            queued = self._ready.pop(user, None)  # one command covers both
            pending = PendingRefresh(user, self.priority_of(user))
            if queued is not None:
                pending = queued
            pending.merge("model_promotion", self._sweep_cause)
            self.stats.swept += 1
            self.stats.emitted += 1
            return pending
        return None

    # -- state --------------------------------------------------------------------------------

    @property
    def sweeping(self) -> bool:
        return self._sweep_pos < len(self._sweep)

    @property
    def sweep_left(self) -> int:
        return len(self._sweep) - self._sweep_pos

    @property
    def pending(self) -> int:
        """Keys waiting (open window plus ready queue), the sweep not counted."""
        return len(self._open) + len(self._ready)

    @property
    def ready(self) -> int:
        return len(self._ready)
