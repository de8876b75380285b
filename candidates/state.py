"""The candidates processor's own state in Redis, maintained from events.interactions.

Responsibilities:
- per user: the recent items (`cand:hist:{user}`, newest first, bounded) and two
  aggregates (`cand:stats:{user}`: n, rated, rating_sum), and the set of known users
  (`cand:users`, what `backfill candidates` walks);
- item-item co-visitation counts (`cand:covisit:{item}`: a sorted set other item -> count,
  so a reader takes the top N cheaply): each new interaction co-occurs with the user's
  previous `covisit_window` items, both ways;
- `record`: applies a batch of interactions in two round trips (read the users' previous
  items, then one pipeline of writes); `read_users`: the features the builder needs.

Kept in Redis (not in the worker's memory) so every instance of the group, the backfill and
tests see one state. At least once: a redelivered batch counts its co-visits twice, which
only nudges scores.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import redis.asyncio as aioredis

from streamrec.models.features import UserFeatures
from streamrec.topics import Interaction
from streamrec.topics.stores import USER_HISTORY

# Internal state (no other part reads it), so plain key patterns rather than store contracts.
HISTORY = USER_HISTORY.pattern  # list, newest first (a contract: serving reads it)
STATS = "cand:stats:{user_id}"  # hash: n, rated, rating_sum
COVISIT = "cand:covisit:{item_id}"  # zset: other item -> count (read: its top N)
KNOWN_USERS = "cand:users"  # set


class CandidateState:
    def __init__(self, store: aioredis.Redis, history_len: int, covisit_window: int) -> None:
        self.store = store
        self.history_len = history_len
        self.window = covisit_window

    async def record(self, events: Sequence[Interaction]) -> set[str]:
        """Apply interactions (in arrival order); returns the users they touched."""
        by_user: dict[str, list[Interaction]] = defaultdict(list)
        for e in events:
            by_user[e.user_id].append(e)
        users = list(by_user)
        async with self.store.pipeline(transaction=False) as pipe:
            for u in users:
                pipe.lrange(HISTORY.format(user_id=u), 0, self.window - 1)
            previous = await pipe.execute()
        pairs: dict[tuple[str, str], int] = defaultdict(int)
        async with self.store.pipeline(transaction=False) as pipe:
            for u, prev in zip(users, previous, strict=True):
                recent = [p.decode() for p in prev]  # newest first
                rating_sum, rated = 0.0, 0
                for e in by_user[u]:
                    for other in recent[: self.window]:
                        if other != e.item_id:
                            pairs[(e.item_id, other)] += 1
                            pairs[(other, e.item_id)] += 1
                    recent.insert(0, e.item_id)
                    if e.rating is not None:
                        rating_sum += e.rating
                        rated += 1
                key = HISTORY.format(user_id=u)
                pipe.lpush(key, *[e.item_id for e in by_user[u]])
                pipe.ltrim(key, 0, self.history_len - 1)
                stats = STATS.format(user_id=u)
                pipe.hincrby(stats, "n", len(by_user[u]))
                if rated:
                    pipe.hincrby(stats, "rated", rated)
                    pipe.hincrbyfloat(stats, "rating_sum", rating_sum)
            for (a, b), count in pairs.items():
                pipe.zincrby(COVISIT.format(item_id=a), count, b)
            if users:
                pipe.sadd(KNOWN_USERS, *users)
            await pipe.execute()
        return set(users)

    async def read_users(self, user_ids: Sequence[str]) -> list[UserFeatures]:
        async with self.store.pipeline(transaction=False) as pipe:
            for u in user_ids:
                pipe.lrange(HISTORY.format(user_id=u), 0, self.history_len - 1)
                pipe.hgetall(STATS.format(user_id=u))
            raw = await pipe.execute()
        out = []
        for i, u in enumerate(user_ids):
            hist, stats = raw[2 * i], raw[2 * i + 1]
            rated = int(stats.get(b"rated", 0))
            out.append(
                UserFeatures(
                    user_id=u,
                    recent_items=[h.decode() for h in reversed(hist)],  # oldest first
                    n_interactions=int(stats.get(b"n", 0)),
                    mean_rating=float(stats[b"rating_sum"]) / rated if rated else None,
                )
            )
        return out

    async def covisited(self, item_ids: Sequence[str], top: int = 100) -> list[dict[str, float]]:
        """For each item, its `top` most co-visited items and their counts (a sorted set, so
        a read costs `top`, not the item's whole neighbourhood)."""
        async with self.store.pipeline(transaction=False) as pipe:
            for i in item_ids:
                pipe.zrevrange(COVISIT.format(item_id=i), 0, top - 1, withscores=True)
            raw = await pipe.execute()
        return [{k.decode(): float(v) for k, v in rows} for rows in raw]

    async def known_users(self, batch: int = 1000) -> list[str]:
        return sorted([u.decode() async for u in self.store.sscan_iter(KNOWN_USERS, count=batch)])
