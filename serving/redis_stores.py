"""Redis adapters: a user's candidates, the trending list and the removed items.

Responsibilities: read the layouts declared in `topics.stores` (the contract with the
candidates and trending processors), validate candidate lists against `CandidateList`, and
translate redis errors into `DependencyError` at this boundary. Deadlines are the caller's
(`serving.deadlines.within`); the socket timeout only bounds a dead connection.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from serving.errors import DependencyError
from topics.stores import POPULAR, REMOVED_ITEMS, USER_CANDIDATES, CandidateList


def connect(url: str, timeout_s: float) -> aioredis.Redis:
    return aioredis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        max_connections=256,
        health_check_interval=0,
    )


class RedisCandidates:
    """`cand:{user_id}` -> `CandidateList` (None when the user has none)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def read(self, user_id: str) -> CandidateList | None:
        try:
            raw = await self.client.get(USER_CANDIDATES.key(user_id=user_id))
        except (RedisError, OSError) as exc:
            raise DependencyError("candidates", f"redis: {exc}") from None
        if raw is None:
            return None
        try:
            return CandidateList.model_validate_json(raw)
        except ValidationError as exc:
            # A malformed list is the writer's bug; for this request it means "no candidates".
            raise DependencyError(
                "candidates", f"invalid CandidateList: {exc.errors()[0]}"
            ) from None


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
