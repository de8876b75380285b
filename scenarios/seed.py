"""The request path's inputs written straight to their stores from ML-100K, per the contracts.

For the demo, the benchmark and the integration tests when the upstream processors
(candidates, trending, session features) are not running: it writes exactly what those
processors write (`topics.stores` layouts and the Feast views of `features.feature_repo`), no more.

Responsibilities:
- `MovieLens`: ratings per user (oldest first) and item popularity from the cached files;
- `seed_candidates`: `cand:{user}` as `CandidateList`s of `n` items the user has not rated,
  scored by popularity with a little per-user noise (a stand-in for retrieval);
- `seed_popular`: the `popular:{window}` zsets;
- `seed_user_features`: the user's session and long-term rows through Feast's online store,
  and the longer history (`cand:hist:{user}`) the candidates processor keeps.
"""

from __future__ import annotations

import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from streamrec.infra.redis_clients import sync_client
from streamrec.infra.settings import Settings
from streamrec.streams import datasets
from streamrec.streams.sources.base import RowError
from streamrec.streams.sources.movielens import MovieLensInteractions, load_items
from streamrec.topics import CatalogItem, candidate_codec
from streamrec.topics.stores import POPULAR, USER_CANDIDATES, USER_HISTORY, Candidate, CandidateList


@dataclass
class MovieLens:
    items: list[CatalogItem]
    history: dict[str, list[tuple[int, str, float]]] = field(default_factory=dict)
    popularity: Counter[str] = field(default_factory=Counter)

    @classmethod
    def load(cls, settings: Settings) -> MovieLens:
        directory = datasets.fetch(settings, "ml-100k")
        ml = cls(items=load_items(directory))
        history: dict[str, list[tuple[int, str, float]]] = defaultdict(list)
        for e in MovieLensInteractions(directory):
            if isinstance(e, RowError):
                continue
            history[e.user_id].append((int(e.ts.timestamp()), e.item_id, e.rating or 0.0))
            ml.popularity[e.item_id] += 1
        ml.history = {u: sorted(h) for u, h in history.items()}
        return ml

    @property
    def users(self) -> list[str]:
        return sorted(self.history, key=int)

    def title(self, item_id: str) -> str:
        return next((i.title for i in self.items if i.item_id == item_id), item_id)


def candidate_list(ml: MovieLens, user_id: str, n: int, seed: int = 0) -> CandidateList:
    rated = {item for _, item, _ in ml.history.get(user_id, [])}
    rng = np.random.default_rng(zlib.crc32(f"{user_id}:{seed}".encode()))
    pool = [i.item_id for i in ml.items if i.item_id not in rated]
    top = max(ml.popularity.values()) or 1
    scores = {i: ml.popularity[i] / top + 0.2 * float(rng.random()) for i in pool}
    best = sorted(pool, key=scores.__getitem__, reverse=True)[:n]
    return CandidateList(
        user_id=user_id,
        model_version="seed",
        items=[Candidate(item_id=i, score=round(scores[i], 6), sources=["seed"]) for i in best],
    )


def seed_candidates(settings: Settings, ml: MovieLens, users: list[str], n: int = 500) -> int:
    client = sync_client(settings)
    with client.pipeline(transaction=False) as pipe:
        for user_id in users:
            value = candidate_codec.encode(candidate_list(ml, user_id, n))
            pipe.set(USER_CANDIDATES.key(user_id=user_id), value, ex=USER_CANDIDATES.ttl_s)
        pipe.execute()
    return len(users)


def seed_popular(settings: Settings, ml: MovieLens, size: int = 500) -> None:
    client = sync_client(settings)
    top = dict(ml.popularity.most_common(size))
    for window in ("24h", "1h"):
        key = POPULAR.key(window=window)
        client.delete(key)
        client.zadd(key, {k: float(v) for k, v in top.items()})


def seed_user_features(settings: Settings, ml: MovieLens, users: list[str]) -> None:
    """Apply the Feast repo and write each user's session and long-term rows (now-stamped)."""
    from streamrec.features import feast_store
    from streamrec.features.online_writer import OnlineWriter

    feast_store.apply(settings)
    genres = {i.item_id: i.genres for i in ml.items}
    now_ms = int(time.time() * 1000)
    session, longterm = [], []
    for user_id in users:
        hist = ml.history.get(user_id, [])
        ratings = [r for _, _, r in hist if r]
        counts: Counter[str] = Counter(g for _, i, _ in hist for g in genres.get(i, []))
        session.append(
            {
                "user_id": user_id,
                "last_items": [i for _, i, _ in hist[-10:]],
                "session_start_ms": now_ms,
                "session_length_s": 0.0,
                "session_interactions": min(len(hist), 10),
                "genre_affinity": [0.0] * 19,
                "last_event_ms": now_ms,
                "event_timestamp": now_ms,
            }
        )
        longterm.append(
            {
                "user_id": user_id,
                "total_interactions": len(hist),
                "top_genres": [g for g, _ in counts.most_common(3)],
                "mean_rating": float(np.mean(ratings)) if ratings else 0.0,
                "event_timestamp": now_ms,
            }
        )
    writer = OnlineWriter(settings)
    writer.write("user_session_fv", session)
    writer.write("user_longterm_fv", longterm)
    # The longer history the candidates processor keeps (`cand:hist:*`, newest first).
    client = sync_client(settings)
    try:
        with client.pipeline(transaction=False) as pipe:
            for user_id in users:
                key = USER_HISTORY.key(user_id=user_id)
                items = [i for _, i, _ in reversed(ml.history.get(user_id, []))]
                pipe.delete(key)
                if items:
                    pipe.rpush(key, *items[: settings.candidates.history_len])
            pipe.execute()
    finally:
        client.close()
