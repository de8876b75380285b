"""In-memory doubles of the serving ports, for unit tests of the core's logic.

Responsibilities: hold what a test stores, and let it inject the failures the real adapters
translate (`fail`: raise `DependencyError`; `delay_s`: answer late, so deadlines trip), the
way httpx's MockTransport stands in for the network. Integration tests use the real adapters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from streamrec.serving.errors import DependencyError
from streamrec.serving.ports import Candidates, FeatureRead, RankInput
from streamrec.topics.stores import CandidateList


class _Faulty:
    def __init__(self, name: str) -> None:
        self.name = name
        self.fail = False
        self.delay_s = 0.0
        self.calls = 0

    async def _enter(self) -> None:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # the injected slowness itself
        if self.fail:
            raise DependencyError(self.name, "injected failure")


class MemoryFeatures(_Faulty):
    def __init__(self, rows: dict[str, FeatureRead] | None = None) -> None:
        super().__init__("features")
        self.rows = rows or {}

    async def read(self, user_id: str) -> FeatureRead | None:
        await self._enter()
        return self.rows.get(user_id)


class MemoryCandidates(_Faulty):
    def __init__(self, rows: dict[str, CandidateList] | None = None) -> None:
        super().__init__("candidates")
        self.rows = rows or {}

    async def read(self, user_id: str) -> Candidates | None:
        await self._enter()
        row = self.rows.get(user_id)
        return Candidates.of(row) if row is not None else None


class MemoryHistory(_Faulty):
    def __init__(self, rows: dict[str, list[str]] | None = None) -> None:
        super().__init__("history")
        self.rows = rows or {}  # oldest first

    async def recent(self, user_id: str, n: int) -> list[str]:
        await self._enter()
        return self.rows.get(user_id, [])[-n:]


class MemoryReads:
    """The merged read (`serving.ports.RequestReads`) over the three doubles above, as one
    round trip: it waits once, as long as the slowest double asked for, and each part fails
    as its own double says (`fail`), the others answering; `fail` here fails the whole trip
    (Redis down). `calls` counts round trips, each double's `calls` its parts."""

    def __init__(
        self, features: MemoryFeatures, candidates: MemoryCandidates, history: MemoryHistory
    ) -> None:
        self.doubles: dict[str, _Faulty] = {
            "features": features,
            "candidates": candidates,
            "history": history,
        }
        self.features, self.candidates, self.history = features, candidates, history
        self.fail = False
        self.calls = 0

    async def read(self, user_id: str, parts: tuple[str, ...], history_n: int) -> dict[str, object]:
        self.calls += 1
        for part in parts:
            self.doubles[part].calls += 1
        delay = max(self.doubles[p].delay_s for p in parts)
        if delay:
            await asyncio.sleep(delay)  # the injected slowness itself
        if self.fail:
            raise DependencyError("redis", "injected failure")
        return self._rows(user_id, parts, history_n)

    async def read_many(
        self, user_ids: list[str], parts: tuple[str, ...], history_n: int
    ) -> list[dict[str, object]]:
        """`read` for a batch of users as ONE round trip (`calls` counts it once; each
        double's `calls` counts its part once per member)."""
        self.calls += 1
        for part in parts:
            self.doubles[part].calls += len(user_ids)
        delay = max(self.doubles[p].delay_s for p in parts)
        if delay:
            await asyncio.sleep(delay)  # the injected slowness itself
        if self.fail:
            raise DependencyError("redis", "injected failure")
        return [self._rows(user_id, parts, history_n) for user_id in user_ids]

    def _rows(self, user_id: str, parts: tuple[str, ...], history_n: int) -> dict[str, object]:
        out: dict[str, object] = {}
        for part in parts:
            if self.doubles[part].fail:
                out[part] = DependencyError(part, "injected failure")
            elif part == "features":
                out[part] = self.features.rows.get(user_id)
            elif part == "candidates":
                row = self.candidates.rows.get(user_id)
                out[part] = Candidates.of(row) if row is not None else None
            else:
                out[part] = self.history.rows.get(user_id, [])[-history_n:]
        return out


class MemoryPopular(_Faulty):
    def __init__(self, lists: dict[str, list[tuple[str, float]]] | None = None) -> None:
        super().__init__("popular")
        self.lists = lists or {}
        self.removed_ids: set[str] = set()

    async def popular(self, window: str, n: int) -> list[tuple[str, float]]:
        await self._enter()
        return self.lists.get(window, [])[:n]

    async def removed(self) -> set[str]:
        await self._enter()
        return set(self.removed_ids)

    async def removed_among(self, item_ids: list[str]) -> set[str]:
        await self._enter()
        return self.removed_ids.intersection(item_ids)


class TableRanker:
    """A stand-in ranker for unit tests: scores from a fixed table (not a model)."""

    def __init__(self, scores: Callable[[str, str], float], version: str = "t1") -> None:
        self.scores = scores
        self._version = version
        self.batches: list[int] = []

    @property
    def version(self) -> str:
        return self._version

    def score(self, batch: list[RankInput]) -> list[np.ndarray]:
        self.batches.append(len(batch))
        return [
            np.asarray([self.scores(inp.user.user_id, i) for i in inp.item_ids], dtype=np.float32)
            for inp in batch
        ]
