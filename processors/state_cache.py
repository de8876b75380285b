"""An in-process cache of a table's decoded values, for the partitions this worker owns.

Responsibilities:
- keep the decoded value (e.g. a `SessionState`) of each key the worker read or wrote, so a
  key seen again is neither read from the local store nor decoded again;
- forget everything whenever the worker's assignment changes (`attach(app)`: faust's
  `on_partitions_revoked` and `on_partitions_assigned` signals): a partition that moves away
  and comes back may have been advanced by another worker, and only the table (recovered
  from its changelog) knows its state then;
- refuse entries computed before such a change (`epoch`): a batch that was under way during
  a rebalance must not put back what the rebalance dropped;
- stay bounded (`max_entries`; the oldest entries go first; 0 disables the cache).

The cache never holds anything the table does not: the processor puts a value in only once
it is the table's value (read from it, or written to it in the same batch), and drops the
whole cache when a batch fails part way (its values may have been changed in place).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import faust

V = TypeVar("V")


class StateCache(Generic[V]):
    """Decoded table values by key, dropped on every rebalance."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._values: dict[bytes, V] = {}
        self.epoch = 0  # bumped by every invalidation
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: bytes) -> V | None:
        value = self._values.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put_many(self, items: dict[bytes, V], epoch: int) -> None:
        """Remember `items` if nothing was invalidated since `epoch` was read."""
        if epoch != self.epoch or not self.max_entries:
            return
        values = self._values
        for key, value in items.items():
            values.pop(key, None)  # re-inserted last: the newest survive eviction
            values[key] = value
        excess = len(values) - self.max_entries
        if excess > 0:
            for key in list(values)[:excess]:
                del values[key]

    def invalidate(self) -> None:
        self._values.clear()
        self.epoch += 1

    def attach(self, app: faust.App) -> None:
        """Invalidate on every change of `app`'s assignment."""

        @app.on_partitions_revoked.connect
        def _revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
            self.invalidate()

        @app.on_partitions_assigned.connect
        def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
            self.invalidate()
