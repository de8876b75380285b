"""A straightforward recomputation of user features from raw interactions, for the tests.

Written independently of `features.session` (no incremental state): sort a user's events by
event time, cut sessions at gaps, sum decayed genre weights. The processor's output must
equal this.
"""

from __future__ import annotations

import math
from collections import Counter

from streamrec.infra.settings import FeatureSettings
from streamrec.streams.sources.movielens import GENRES


def recompute(
    events: list[tuple[int, str, float | None]],
    genres_of: dict[str, tuple[str, ...]],
    cfg: FeatureSettings,
) -> dict[str, object]:
    """events: (ts_ms, item_id, rating) of ONE user, in the order they happened (stable ties)."""
    events = sorted(events, key=lambda e: e[0])  # stable: equal times keep their order
    last_ts = events[-1][0]
    # Sessions: a new one starts after a gap longer than session_gap_s.
    start = prev = events[0][0]
    count = 0
    for ts, _item, _r in events:
        if ts - prev > cfg.session_gap_s * 1000:
            start, count = ts, 0
        count += 1
        prev = ts
    tau = cfg.affinity_half_life_s * 1000 / math.log(2)
    affinity = [0.0] * len(GENRES)
    counts: Counter[str] = Counter()
    for ts, item, _r in events:
        known = [g for g in genres_of.get(item, ()) if g in GENRES]
        for g in known:
            affinity[GENRES.index(g)] += math.exp(-(last_ts - ts) / tau) / len(known)
            counts[g] += 1
    ratings = [r for _ts, _i, r in events if r is not None]
    top = sorted(counts, key=lambda g: (-counts[g], GENRES.index(g)))[: cfg.top_genres]
    return {
        "last_items": [item for _ts, item, _r in events[-cfg.last_items :]],
        "session_start_ms": start,
        "session_length_s": (prev - start) / 1000,
        "session_interactions": count,
        "genre_affinity": affinity,
        "last_event_ms": last_ts,
        "total_interactions": len(events),
        "top_genres": top,
        "mean_rating": sum(ratings) / len(ratings) if ratings else 0.0,
    }


def assert_features_equal(got: dict[str, object], want: dict[str, object], who: str) -> None:
    for name, value in want.items():
        if name == "genre_affinity":
            assert len(got[name]) == len(value), who
            for a, b in zip(got[name], value, strict=True):
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (
                    who,
                    name,
                    got[name],
                    value,
                )
        elif isinstance(value, float):
            assert math.isclose(got[name], value, rel_tol=1e-12), (who, name, got[name], value)
        else:
            assert got[name] == value, (who, name, got[name], value)
