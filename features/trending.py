"""Windowed item counts on event time (pure logic, no I/O).

Responsibilities:
- `WINDOWS`: the hopping windows, by name: `1h` (size 1 h, hop 5 min) and `24h` (size 24 h,
  hop 1 h);
- `TrendingState`: one stream partition's counts per (window, hop bucket), its event-time
  watermark, and a compact JSON codec (the trending processor's Faust table value);
- `TrendingState.add`: count one event, unless it is older than the allowed lateness;
- `TrendingState.latest`: the counts of the latest window of each kind (the one holding the
  watermark), which is what "trending now" means in event time;
- `TrendingState.applied`: the offset of the partition's last message applied, stored with
  the counts, so a message delivered again after a restart is recognised and not counted twice
  (`is_redelivery`).

A hopping window of size S and hop H is the sum of S/H consecutive buckets of width H, so
each event is counted once per bucket, not once per overlapping window. Windows follow
event time (ML-100K's events are from 1997-98), never the wall clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson


@dataclass(frozen=True)
class Window:
    name: str
    size_ms: int
    hop_ms: int

    def bucket(self, ts: int) -> int:
        return ts - ts % self.hop_ms

    def latest_end(self, watermark: int) -> int:
        """End of the latest window that contains `watermark` (exclusive)."""
        return self.bucket(watermark) + self.hop_ms


WINDOWS = (
    Window("1h", 3600_000, 300_000),
    Window("24h", 86_400_000, 3600_000),
)


@dataclass(slots=True)
class TrendingState:
    watermark: int = -1
    # The stream partition's last offset applied to these counts (-1: none). It lives in the
    # same table value as the counts, so both reach the changelog together or not at all.
    applied: int = -1
    # window name -> bucket start (ms) -> item_id -> count
    buckets: dict[str, dict[int, dict[str, int]]] = field(
        default_factory=lambda: {w.name: {} for w in WINDOWS}
    )

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "wm": self.watermark,
                "off": self.applied,
                "b": {
                    name: {str(k): v for k, v in per.items()} for name, per in self.buckets.items()
                },
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> TrendingState:
        if not raw:
            return cls()
        data = orjson.loads(raw)
        state = cls(watermark=data["wm"], applied=data.get("off", -1))
        for name, per in data["b"].items():
            state.buckets[name] = {int(k): v for k, v in per.items()}
        return state

    def is_redelivery(self, offset: int) -> bool:
        """True when the message at `offset` of this state's partition was applied before
        (redelivered after a restart or a rebalance): neither new nor late."""
        return offset <= self.applied

    def add(self, ts: int, item_id: str, lateness_ms: int) -> bool:
        """Count one event at event time `ts` (ms); False when it is too late to count."""
        if self.watermark >= 0 and ts < self.watermark - lateness_ms:
            return False
        for w in WINDOWS:
            per_item = self.buckets[w.name].setdefault(w.bucket(ts), {})
            per_item[item_id] = per_item.get(item_id, 0) + 1
        if ts > self.watermark:
            self.watermark = ts
            self._prune(lateness_ms)
        return True

    def _prune(self, lateness_ms: int) -> None:
        for w in WINDOWS:
            # A bucket is needed while a window an allowed event can still reach holds it.
            oldest = w.bucket(self.watermark - lateness_ms) - w.size_ms
            per = self.buckets[w.name]
            for start in [b for b in per if b < oldest]:
                del per[start]

    def latest(self, window: Window) -> tuple[int, Counter[str]]:
        """(end ms, item counts) of the latest `window` containing the watermark."""
        if self.watermark < 0:
            return 0, Counter()
        end = window.latest_end(self.watermark)
        counts: Counter[str] = Counter()
        for start, per_item in self.buckets[window.name].items():
            if end - window.size_ms <= start < end:
                counts.update(per_item)
        return end, counts
