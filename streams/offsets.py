"""Which offset a consumer may commit while it finishes messages out of order.

A consumer that hands messages to concurrent work (the serving request topic: up to
`topic_concurrency` requests in flight) must not commit past a message whose work is not
finished: after a crash, the group's next owner starts at the committed offset, and a
request polled but never answered would be lost. `PendingOffsets` keeps, per partition, the
offsets in flight; the offset to commit is the lowest one still open, or one past the highest
finished when none is open.

Usage (with `enable.auto.offset.store=false`)::

    pending.begin(tp, offset)                 # when the message is polled
    ...
    commit = pending.finish(tp, offset)       # when its outcome is durable
    if commit is not None:
        consumer.store_offsets(offsets=[TopicPartition(*tp, commit)])
"""

from __future__ import annotations

import threading

Partition = tuple[str, int]


class PendingOffsets:
    """Thread-safe: messages begin on the consumer's thread and finish on others."""

    def __init__(self) -> None:
        self._open: dict[Partition, set[int]] = {}
        self._high: dict[Partition, int] = {}  # one past the highest finished offset
        self._lock = threading.Lock()

    def begin(self, tp: Partition, offset: int) -> None:
        with self._lock:
            self._open.setdefault(tp, set()).add(offset)

    def finish(self, tp: Partition, offset: int) -> int | None:
        """The offset now safe to commit on `tp`, or None when it did not move (an earlier
        message is still open, or the partition was revoked meanwhile)."""
        with self._lock:
            still = self._open.get(tp)
            if still is None or offset not in still:
                return None
            before = self.committable(tp, locked=True)
            still.discard(offset)
            self._high[tp] = max(self._high.get(tp, 0), offset + 1)
            after = self.committable(tp, locked=True)
            return after if after != before else None

    def committable(self, tp: Partition, locked: bool = False) -> int | None:
        if not locked:
            with self._lock:
                return self.committable(tp, locked=True)
        still = self._open.get(tp)
        if still:
            return min(still)
        return self._high.get(tp)

    def open_count(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._open.values())

    def revoke(self, partitions: list[Partition]) -> None:
        """Forget revoked partitions: their new owner starts at the last committed offset,
        and an answer finished here afterwards must not store an offset for them."""
        with self._lock:
            for tp in partitions:
                self._open.pop(tp, None)
                self._high.pop(tp, None)
