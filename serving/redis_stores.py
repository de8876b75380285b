"""Redis adapters: a user's candidates, the trending list and the removed items.

Responsibilities: read the layouts declared in `topics.stores` (the contract with the
candidates and trending processors), check candidate lists, and translate redis errors into
`DependencyError` at this boundary. A stored `CandidateList` is read with
`topics.candidate_codec.read_ranked`: the ids, scores and model version, every length checked,
without building 500 models (ADR 0048). Deadlines are the caller's
(`serving.deadlines.within`); the socket timeout only bounds a dead connection.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from serving.errors import DependencyError
from serving.ports import Candidates
from topics import candidate_codec
from topics.errors import SchemaError
from topics.stores import POPULAR, REMOVED_ITEMS, USER_CANDIDATES, USER_HISTORY


def connect(url: str, timeout_s: float) -> aioredis.Redis:
    return aioredis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        max_connections=256,
        health_check_interval=0,
    )


class RedisCandidates:
    """`cand:{user_id}` (a `CandidateList`) -> `Candidates` (None when the user has none)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def read(self, user_id: str) -> Candidates | None:
        try:
            raw = await self.client.get(USER_CANDIDATES.key(user_id=user_id))
        except (RedisError, OSError) as exc:
            raise DependencyError("candidates", f"redis: {exc}") from None
        if raw is None:
            return None
        try:
            ranked = candidate_codec.read_ranked(raw)
        except SchemaError as exc:
            # A malformed list is the writer's bug; for this request it means "no candidates".
            raise DependencyError("candidates", exc.reason) from None
        return Candidates(ranked.item_ids, ranked.scores, ranked.model_version)


class RedisHistory:
    """`cand:hist:{user_id}` (newest first) -> the last n items, oldest first."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def recent(self, user_id: str, n: int) -> list[str]:
        try:
            raw = await self.client.lrange(USER_HISTORY.key(user_id=user_id), 0, n - 1)
        except (RedisError, OSError) as exc:
            raise DependencyError("history", f"redis: {exc}") from None
        return [item.decode() for item in reversed(raw)]


class RedisPopular:
    """`popular:{window}` zsets and the `catalog:removed` set."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def popular(self, window: str, n: int) -> list[tuple[str, float]]:
        try:
            rows = await self.client.zrevrange(
                POPULAR.key(window=window), 0, n - 1, withscores=True
            )
        except (RedisError, OSError) as exc:
            raise DependencyError("popular", f"redis: {exc}") from None
        return [(item.decode(), float(score)) for item, score in rows]

    async def removed(self) -> set[str]:
        try:
            members = await self.client.smembers(REMOVED_ITEMS.key())
        except (RedisError, OSError) as exc:
            raise DependencyError("popular", f"redis: {exc}") from None
        return {m.decode() for m in members}

    async def removed_among(self, item_ids: list[str]) -> set[str]:
        try:
            flags = await self.client.smismember(REMOVED_ITEMS.key(), item_ids)
        except (RedisError, OSError) as exc:
            raise DependencyError("popular", f"redis: {exc}") from None
        return {i for i, flag in zip(item_ids, flags, strict=True) if flag}
