"""Redis adapters: a user's candidates, the trending list and the removed items.

Responsibilities: read the layouts declared in `topics.stores` (the contract with the
candidates and trending processors), validate candidate lists, and translate redis errors
into `DependencyError` at this boundary. A stored `CandidateList` is validated against a
narrow TypedDict view (the ids and scores the request path uses, nothing else): pydantic
still checks every field it reads, at a quarter of the cost of building 500 `Candidate`
models (~0.25 ms against ~1 ms per request; BENCHMARKS.md, issue 6). Deadlines are the caller's
(`serving.deadlines.within`); the socket timeout only bounds a dead connection.
"""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from pydantic import Field, TypeAdapter, ValidationError
from redis.exceptions import RedisError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from serving.errors import DependencyError
from serving.ports import Candidates
from topics.stores import POPULAR, REMOVED_ITEMS, USER_CANDIDATES, USER_HISTORY


class _Candidate(TypedDict):
    item_id: str
    score: float


class _CandidateView(TypedDict):
    """The part of `topics.stores.CandidateList` serving reads (extra fields are ignored)."""

    model_version: str
    items: Annotated[list[_Candidate], Field(max_length=1000)]  # as CandidateList.items


_VIEW = TypeAdapter(_CandidateView)


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
            view = _VIEW.validate_json(raw)
        except ValidationError as exc:
            # A malformed list is the writer's bug; for this request it means "no candidates".
            raise DependencyError(
                "candidates", f"invalid CandidateList: {exc.errors()[0]}"
            ) from None
        items = view["items"]
        return Candidates(
            [c["item_id"] for c in items], [c["score"] for c in items], view["model_version"]
        )


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
