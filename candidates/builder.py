"""Building a user's candidate list from several tagged sources, fused by rank.

Responsibilities:
- gather each source's ranked items for a batch of users:
  `two_tower` (ANN over the promoted retriever's item vectors), `covisit` (items
  co-visited with the user's latest items, recency-weighted), `content` (`candidates.content`:
  the live vector index's items closest to the session's items, so items added since
  training are found; the retriever's shipped vectors until a snapshot exists), `trending`
  (`topics.stores.POPULAR`, else the model's training popularity);
- fuse them with weighted reciprocal-rank fusion (score = sum of w / (60 + rank)), keeping
  every source that proposed an item; users with 1-5 interactions ("session users") weigh
  the session sources (covisit, content) above the two-tower; users with none get trending;
- drop the user's recent items and removed items; keep the best `max_candidates`;
- write `cand:{user_id}` (a `CandidateList` in `topics.candidate_codec`'s stored form, with its
  TTL) and return the summaries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import redis.asyncio as aioredis

from streamrec.candidates.content import ContentSource
from streamrec.candidates.state import CandidateState
from streamrec.infra.settings import CandidateSettings
from streamrec.models.features import UserFeatures
from streamrec.models.retriever import Hit, RetrieverModel
from streamrec.topics import CandidatesUpdated, candidate_codec
from streamrec.topics.stores import (
    POPULAR,
    REMOVED_ITEMS,
    USER_CANDIDATES,
    Candidate,
    CandidateList,
)

RRF_K = 60.0
NO_MODEL = "none"
WEIGHTS = {
    "regular": {"two_tower": 1.0, "content": 0.9, "covisit": 0.8, "trending": 0.2},
    "session": {"covisit": 1.0, "content": 1.0, "two_tower": 0.7, "trending": 0.4},
    "new": {"trending": 1.0},
}


def fuse(
    ranked: dict[str, list[Hit]], weights: dict[str, float], exclude: set[str], limit: int
) -> list[Candidate]:
    scores: dict[str, float] = defaultdict(float)
    sources: dict[str, list[str]] = defaultdict(list)
    for source, hits in ranked.items():
        w = weights.get(source, 0.0)
        for rank, (item, _) in enumerate(hits):
            if item in exclude:
                continue
            scores[item] += w / (RRF_K + rank)
            sources[item].append(source)
    best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [Candidate(item_id=i, score=round(s * 1000, 4), sources=sources[i]) for i, s in best]


def covisit_hits(neighbours: list[dict[str, float]], k: int) -> list[Hit]:
    """Sum of co-visit counts, the latest item weighing most (neighbours: newest first)."""
    total: dict[str, float] = defaultdict(float)
    for age, counts in enumerate(neighbours):
        decay = 0.8**age
        for item, c in counts.items():
            total[item] += decay * c
    return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


class CandidateBuilder:
    def __init__(
        self,
        cfg: CandidateSettings,
        store: aioredis.Redis,
        state: CandidateState,
        retriever: RetrieverModel | None,
        session_len: int = 5,
        content: ContentSource | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.state = state
        self.retriever = retriever
        self.session_len = session_len
        self.content = content

    @property
    def model_version(self) -> str:
        return self.retriever.version if self.retriever else NO_MODEL

    async def trending(self) -> list[Hit]:
        k = self.cfg.trending_k
        raw = await self.store.zrevrange(
            POPULAR.key(window=self.cfg.trending_window), 0, k - 1, withscores=True
        )
        if raw:
            return [(i.decode(), float(s)) for i, s in raw]
        if self.retriever is None:
            return []
        table = self.retriever.table
        top = np.argsort(-table.popularity, kind="stable")[:k]
        return [(str(table.ids[i]), float(table.popularity[i])) for i in top]

    async def build(self, user_ids: Sequence[str]) -> list[CandidateList]:
        if not user_ids:
            return []
        users = await self.state.read_users(user_ids)
        trending = await self.trending()
        removed = {m.decode() for m in await self.store.smembers(REMOVED_ITEMS.key())}
        active = [u for u in users if u.n_interactions > 0 and u.recent_items]
        ann: dict[str, list[Hit]] = {}
        if self.retriever is not None and active and self.cfg.two_tower_k:
            for u, hits in zip(
                active, self.retriever.search(active, self.cfg.two_tower_k), strict=True
            ):
                ann[u.user_id] = hits
        similar = dict(
            zip((u.user_id for u in active), self._content(active, removed), strict=True)
        )
        out = []
        for u in users:
            hits = similar.get(u.user_id, [])
            out.append(await self._one(u, ann.get(u.user_id, []), hits, trending, removed))
        return out

    def _content(self, users: list[UserFeatures], removed: set[str]) -> list[list[Hit]]:
        """The content source for every active user (one batched index search)."""
        sessions = [self.session(u) for u in users]
        excludes = [set(u.recent_items) | removed for u in users]
        k = self.cfg.content_k
        if self.content is not None:
            return self.content.similar(sessions, k, excludes, self.retriever)
        if self.retriever is None:
            return [[] for _ in users]
        pairs = zip(sessions, excludes, strict=True)
        return [self.retriever.similar_content(s, k, e) for s, e in pairs]

    def session(self, user: UserFeatures) -> list[str]:
        return user.recent_items[-self.session_len :][::-1]  # newest first

    async def _one(
        self,
        user: UserFeatures,
        ann: list[Hit],
        content: list[Hit],
        trending: list[Hit],
        removed: set[str],
    ) -> CandidateList:
        session = self.session(user)
        ranked: dict[str, list[Hit]] = {"trending": trending}
        if session:
            ranked["two_tower"] = ann
            neighbours = await self.state.covisited(session)
            ranked["covisit"] = covisit_hits(neighbours, self.cfg.covisit_k)
            if self.retriever is not None or self.content is not None:
                ranked["content"] = content
        if user.n_interactions == 0 or not session:
            profile = "new"
        elif user.n_interactions <= self.cfg.session_users_max:
            profile = "session"
        else:
            profile = "regular"
        items = fuse(
            ranked,
            WEIGHTS[profile],
            set(user.recent_items) | removed,
            self.cfg.max_candidates,
        )
        return CandidateList(user_id=user.user_id, model_version=self.model_version, items=items)

    async def write(self, lists: Sequence[CandidateList]) -> list[CandidatesUpdated]:
        ttl = USER_CANDIDATES.ttl_s
        async with self.store.pipeline(transaction=False) as pipe:
            for c in lists:
                pipe.set(USER_CANDIDATES.key(user_id=c.user_id), candidate_codec.encode(c), ex=ttl)
            await pipe.execute()
        return [summary(c) for c in lists]


def summary(c: CandidateList) -> CandidatesUpdated:
    per_source: dict[str, int] = defaultdict(int)
    for item in c.items:
        for s in item.sources:
            per_source[s] += 1
    return CandidatesUpdated(
        user_id=c.user_id,
        count=len(c.items),
        sources=dict(per_source),
        model_version=c.model_version,
        computed_at=c.computed_at,
    )
