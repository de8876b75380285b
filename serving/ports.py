"""The narrow interfaces the request path reads through, and the values they carry.

Responsibilities: declare what the core needs from each dependency, nothing more, so the
Redis/Feast/registry adapters and the in-memory doubles (`serving.memory`) are
interchangeable. Each method raises `serving.errors.DependencyError` (or a subclass) when the
dependency fails; "nothing stored" is `None` or an empty result, not an error.

| port | real adapter | answers |
| --- | --- | --- |
| `UserFeatureStore` | `serving.feature_store.FeastUserFeatures` | a user's online features |
| `CandidateStore` | `serving.redis_stores.RedisCandidates` | a user's precomputed candidates |
| `HistoryStore` | `serving.redis_stores.RedisHistory` | a user's recent items (up to 50) |
| `PopularStore` | `serving.redis_stores.RedisPopular` | trending list, removed items |
| `RequestReads` | `serving.redis_stores.RedisRequestReads` | the first three, one trip a batch |
| `Ranker` | `serving.ranker_adapter.RegistryRanker` | scores for users' candidates |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np

from streamrec.models.feature_profile import FeatureProfile
from streamrec.models.features import UserFeatures
from streamrec.topics.stores import CandidateList


@dataclass(frozen=True)
class FeatureRead:
    """A user's features and when they were last written (None: unknown)."""

    features: UserFeatures
    updated_at: datetime | None = None


@dataclass
class ItemInfo:
    """What re-ranking and the answer need about an item (held in memory)."""

    item_id: str
    title: str = ""
    genres: list[str] = field(default_factory=list)
    year: int | None = None
    popularity: float = 0.0


@dataclass(frozen=True)
class Candidates:
    """A user's candidates as the request path uses them: ids and retrieval scores, best
    first. Two flat lists instead of 500 `Candidate` models: building those cost ~1 ms per
    request, the largest single item in the serving profile (BENCHMARKS.md, Serving)."""

    item_ids: list[str]
    scores: list[float] | np.ndarray  # an array when read in a batch (one decode for all)
    model_version: str = ""

    @classmethod
    def of(cls, stored: CandidateList) -> Candidates:
        return cls(
            [c.item_id for c in stored.items],
            [c.score for c in stored.items],
            stored.model_version,
        )

    def head(self, n: int) -> Candidates:
        if len(self.item_ids) <= n:
            return self
        return Candidates(self.item_ids[:n], self.scores[:n], self.model_version)


@dataclass(frozen=True)
class RankInput:
    """One request's share of a ranking batch."""

    user: UserFeatures
    item_ids: list[str]


class UserFeatureStore(Protocol):
    async def read(self, user_id: str) -> FeatureRead | None: ...


class CandidateStore(Protocol):
    async def read(self, user_id: str) -> Candidates | None: ...


class HistoryStore(Protocol):
    async def recent(self, user_id: str, n: int) -> list[str]:
        """The user's last `n` items, oldest first ([] when none are stored)."""
        ...


class RequestReads(Protocol):
    """The user's features, candidates and history read in ONE round trip (ADR 0056)."""

    async def read(self, user_id: str, parts: tuple[str, ...], history_n: int) -> dict[str, object]:
        """For each part asked for ("features", "candidates", "history"): what that part's own
        store would return, or the `DependencyError` (named after the part) it failed with,
        so each part is still judged by its own breaker. Raises `DependencyError` only when
        the round trip itself failed (then every part did)."""
        ...

    async def read_many(
        self, user_ids: list[str], parts: tuple[str, ...], history_n: int
    ) -> list[dict[str, object]]:
        """`read` for a batch of users in ONE round trip: one dict per user, each part failing
        for its member alone; raises `DependencyError` only when the trip itself failed."""
        ...


class PopularStore(Protocol):
    async def popular(self, window: str, n: int) -> list[tuple[str, float]]: ...

    async def removed(self) -> set[str]: ...

    async def removed_among(self, item_ids: list[str]) -> set[str]:
        """Which of `item_ids` are removed now (one round trip: checked on every answer)."""
        ...


class Ranker(Protocol):
    """A loaded ranking model. `score` is synchronous: the batcher runs it off the event loop."""

    @property
    def version(self) -> str: ...

    def score(self, batch: list[RankInput]) -> list[np.ndarray]: ...


@runtime_checkable
class ProfiledRanker(Protocol):
    """A ranker that gives the skew check its training profile and, with a batch's scores,
    the dense inputs (pairs, features) it computed them from."""

    @property
    def version(self) -> str: ...

    feature_profile: FeatureProfile | None

    def score(self, batch: list[RankInput]) -> list[np.ndarray]: ...

    def score_with_features(
        self, batch: list[RankInput]
    ) -> tuple[list[np.ndarray], np.ndarray]: ...
