"""A user's session state and how one interaction updates it (pure logic, no I/O).

Responsibilities:
- `SessionState`: everything the session processor keeps per user (its Faust table value),
  with a compact JSON codec;
- `apply_event`: accept or refuse one event (duplicate / too late) and update the state;
- `SessionState.features()`: the row of `user_session_fv` it implies.

Semantics (docs/adr/0020-session-features-semantics.md):
- event time only; sessions are maximal runs of events with gaps <= `session_gap_s`; a late
  event (within `allowed_lateness_s` of the user's latest event) is inserted where it
  belongs: it may extend a session or merge two;
- duplicates by event_id: the ids of every event within the lateness horizon are kept
  (bounded by `recent_ids_max`), and anything older than the horizon is refused as too late,
  so a duplicate is always recognised;
- genre affinity: each interaction adds 1 split evenly over its item's genres, decayed
  exponentially (half-life `affinity_half_life_s`) to the user's latest event time;
- long-term aggregates (total, mean rating, top genres by undecayed count) ride along, so
  the stream can keep `user_longterm_fv` fresh too.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from enum import StrEnum

import orjson

from streamrec.infra.settings import FeatureSettings
from streamrec.streams.sources.movielens import GENRES

GENRE_INDEX = {g: i for i, g in enumerate(GENRES)}
N_GENRES = len(GENRES)


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    TOO_LATE = "too_late"


@dataclass(slots=True)
class SessionState:
    """Per-user state. Times are epoch milliseconds (event time)."""

    max_ts: int = -1
    floor_ts: int = -(2**62)  # events with ts < floor_ts are refused (too late)
    recent: list[list] = field(default_factory=list)  # [[ts, event_id], ...] sorted by ts
    last: list[list] = field(default_factory=list)  # [[ts, item_id], ...] newest last
    sessions: list[list[int]] = field(default_factory=list)  # [[start, end, count], ...]
    affinity: list[float] = field(default_factory=lambda: [0.0] * N_GENRES)
    total: int = 0
    rating_sum: float = 0.0
    rating_n: int = 0
    genre_counts: list[int] = field(default_factory=lambda: [0] * N_GENRES)  # undecayed
    # [partition, offset] of the last source event applied: a message at or before it on
    # the same partition was handled before (a redelivery after a restart or rebalance).
    applied: list[int] = field(default_factory=lambda: [-1, -1])

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            [
                self.max_ts,
                self.floor_ts,
                self.recent,
                self.last,
                self.sessions,
                self.affinity,
                self.total,
                self.rating_sum,
                self.rating_n,
                self.genre_counts,
                self.applied,
            ]
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> SessionState:
        if not raw:
            return cls()
        return cls(*orjson.loads(raw))

    def features(self) -> dict[str, object]:
        """The `user_session_fv` row (without user_id and event_timestamp)."""
        start, end, count = self.sessions[-1] if self.sessions else (0, 0, 0)
        return {
            "last_items": [item for _ts, item in self.last],
            "session_start_ms": start,
            "session_length_s": (end - start) / 1000.0,
            "session_interactions": count,
            "genre_affinity": list(self.affinity),
            "last_event_ms": self.max_ts,
        }

    def longterm_features(self, top_n: int) -> dict[str, object]:
        """The `user_longterm_fv` row: the stream keeps the batch view fresh between backfills."""
        ranked = sorted(
            (i for i in range(N_GENRES) if self.genre_counts[i]),
            key=lambda i: (-self.genre_counts[i], i),
        )
        return {
            "total_interactions": self.total,
            "top_genres": [GENRES[i] for i in ranked[:top_n]],
            "mean_rating": self.rating_sum / self.rating_n if self.rating_n else 0.0,
        }


def is_redelivery(state: SessionState, partition: int, offset: int) -> bool:
    """True when the message at (`partition`, `offset`) is at or before the last one applied
    to `state`: it was handled before (the worker restarted or the partition moved), so it
    is neither new nor late. A user's messages are on one partition, in offset order."""
    last_partition, last_offset = state.applied
    return partition == last_partition and offset <= last_offset


def ts_ms(ts_seconds: float) -> int:
    return round(ts_seconds * 1000)


def genre_weights(genres: list[str] | tuple[str, ...]) -> list[tuple[int, float]]:
    """Each known genre of the item gets an equal share of 1."""
    idx = [GENRE_INDEX[g] for g in genres if g in GENRE_INDEX]
    return [(i, 1.0 / len(idx)) for i in idx] if idx else []


def apply_event(
    state: SessionState,
    cfg: FeatureSettings,
    *,
    event_id: str,
    ts: int,
    item_id: str,
    genres: list[str] | tuple[str, ...] = (),
    rating: float | None = None,
    weights: list[tuple[int, float]] | None = None,
) -> Outcome:
    """Update `state` with one event (ts in epoch ms); refuse duplicates and too-late ones.
    `weights`: the item's `genre_weights(genres)`, when the caller keeps them per item."""
    if ts < state.floor_ts:
        return Outcome.TOO_LATE
    for _ts, eid in state.recent:
        if eid == event_id:
            return Outcome.DUPLICATE
    _remember(state, cfg, event_id, ts)
    _add_last(state, cfg, ts, item_id)
    _add_to_sessions(state, cfg, ts)
    _add_affinity(state, cfg, ts, genre_weights(genres) if weights is None else weights)
    if ts > state.max_ts:
        state.max_ts = ts
    _prune(state, cfg)
    state.total += 1
    if rating is not None:
        state.rating_sum += rating
        state.rating_n += 1
    return Outcome.ACCEPTED


def _remember(state: SessionState, cfg: FeatureSettings, event_id: str, ts: int) -> None:
    recent = state.recent
    pos = bisect.bisect_right([r[0] for r in recent], ts) if recent and ts < recent[-1][0] else None
    if pos is None:
        recent.append([ts, event_id])
    else:
        recent.insert(pos, [ts, event_id])
    if len(recent) > cfg.recent_ids_max:
        # Forgetting an id means its duplicates could no longer be told apart: from now on
        # nothing at or before its time is accepted.
        evicted_ts = recent.pop(0)[0]
        state.floor_ts = max(state.floor_ts, evicted_ts + 1)


def _add_last(state: SessionState, cfg: FeatureSettings, ts: int, item_id: str) -> None:
    last = state.last
    if last and ts < last[-1][0]:
        pos = bisect.bisect_right([x[0] for x in last], ts)
        if pos == 0 and len(last) >= cfg.last_items:
            return  # older than everything kept: not among the last N
        last.insert(pos, [ts, item_id])
    else:
        last.append([ts, item_id])
    if len(last) > cfg.last_items:
        del last[: len(last) - cfg.last_items]


def _add_to_sessions(state: SessionState, cfg: FeatureSettings, ts: int) -> None:
    gap = cfg.session_gap_s * 1000
    sessions = state.sessions
    touching = [i for i, (s, e, _c) in enumerate(sessions) if s - gap <= ts <= e + gap]
    if not touching:
        starts = [s for s, _e, _c in sessions]
        sessions.insert(bisect.bisect_right(starts, ts), [ts, ts, 1])
        return
    first, last = touching[0], touching[-1]
    merged = [
        min(ts, sessions[first][0]),
        max(ts, sessions[last][1]),
        1 + sum(sessions[i][2] for i in touching),
    ]
    sessions[first : last + 1] = [merged]


def _add_affinity(
    state: SessionState, cfg: FeatureSettings, ts: int, weights: list[tuple[int, float]]
) -> None:
    # The vector is held decayed to max_ts: a newer event decays it forward first, an older
    # one adds its weight already decayed to max_ts. Both orders give the same sum.
    tau_ms = cfg.affinity_half_life_s * 1000.0 / math.log(2)
    aff = state.affinity
    if state.max_ts >= 0 and ts > state.max_ts:
        k = math.exp(-(ts - state.max_ts) / tau_ms)
        for i in range(N_GENRES):
            aff[i] *= k
        scale = 1.0
    elif state.max_ts >= 0:
        scale = math.exp(-(state.max_ts - ts) / tau_ms)
    else:
        scale = 1.0
    for i, w in weights:
        aff[i] += w * scale
        state.genre_counts[i] += 1


def _prune(state: SessionState, cfg: FeatureSettings) -> None:
    """Forget what no allowed event can touch any more."""
    horizon = state.max_ts - cfg.allowed_lateness_s * 1000
    if horizon > state.floor_ts:
        state.floor_ts = horizon
    recent = state.recent
    drop = 0
    while drop < len(recent) and recent[drop][0] < state.floor_ts:
        drop += 1
    if drop:
        del recent[:drop]
    # A session can still be reached by an allowed event if it ends within gap of the floor.
    gap = cfg.session_gap_s * 1000
    sessions = state.sessions
    keep_from = 0
    while keep_from < len(sessions) - 1 and sessions[keep_from][1] + gap < state.floor_ts:
        keep_from += 1
    if keep_from:
        del sessions[:keep_from]
