"""An answer as the batch handler makes it: aligned arrays, written out with orjson.

Responsibilities:
- `Answer`: one request's answer as parallel lists (item ids, scores, explanations) with its
  level, model version and timing; the cache and coalescing hold it as it is, and a hit is
  re-stamped (`stamped`) or filtered (`without`) without building anything per item;
- `response_json`: the bytes of the `topics.RecResponse` contract (the request topic's reply),
  `http_json`: the HTTP `Recommendations` body with titles and genres from the catalog; both
  one `orjson.dumps` of plain lists and dicts;
- `items` / `response()`: the pydantic views, built on demand for callers off the hot path
  (tests, the demo) and validated there.

Why: building a `RecommendedItem` per item and a `RecResponse` per answer (even with
`model_construct`) and serialising them again was a visible share of the event loop's CPU
per answer (ADR 0092); the contract stays `RecResponse`, which tests check on real bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

import orjson

from streamrec.serving.ports import ItemInfo
from streamrec.topics import RecommendedItem, RecResponse
from streamrec.topics.recs_responses import Level


@dataclass(slots=True)
class Answer:
    correlation_id: str
    user_id: str
    item_ids: list[str]
    scores: list[float]
    explanations: list[str | None]
    level: Level
    model_version: str | None
    latency_ms: float
    served_at: datetime
    # the items exploration put in (serving.exploration); `without` keeps it as it is, since
    # only the ids still in `item_ids` are written out as explored
    explored: frozenset[str] = frozenset()

    @property
    def items(self) -> list[RecommendedItem]:
        """The items as the contract's models (validated): for callers off the hot path."""
        return [
            RecommendedItem(item_id=i, score=s, explanation=e, explored=i in self.explored)
            for i, s, e in zip(self.item_ids, self.scores, self.explanations, strict=True)
        ]

    def response(self) -> RecResponse:
        """The validated `RecResponse` of these bytes (tests, the demo)."""
        return RecResponse.model_validate_json(self.response_json())

    def stamped(self, correlation_id: str, latency_ms: float) -> Answer:
        """The same answer for another caller (a cache hit, a coalesced request)."""
        if correlation_id == self.correlation_id and latency_ms == self.latency_ms:
            return self
        return replace(self, correlation_id=correlation_id, latency_ms=latency_ms)

    def without(self, gone: set[str]) -> Answer:
        """The answer minus the items in `gone` (removed since it was made)."""
        if not gone:
            return self
        keep = [n for n, i in enumerate(self.item_ids) if i not in gone]
        return replace(
            self,
            item_ids=[self.item_ids[n] for n in keep],
            scores=[self.scores[n] for n in keep],
            explanations=[self.explanations[n] for n in keep],
        )

    def response_json(self) -> bytes:
        """The `RecResponse` contract's JSON, written from the arrays. `explored` is written
        only where true, so an answer without exploration is what it was before the field."""
        items: list[dict[str, object]] = [
            {"item_id": i, "score": s, "explanation": e}
            for i, s, e in zip(self.item_ids, self.scores, self.explanations, strict=True)
        ]
        if self.explored:
            for item in items:
                if item["item_id"] in self.explored:
                    item["explored"] = True
        return orjson.dumps(
            {
                "schema_version": 1,
                "correlation_id": self.correlation_id,
                "user_id": self.user_id,
                "items": items,
                "level": self.level,
                "model_version": self.model_version,
                "latency_ms": self.latency_ms,
                "served_at": self.served_at,
            }
        )

    def http_json(self, item_info: Callable[[str], ItemInfo | None]) -> bytes:
        """The HTTP `Recommendations` body (serving.schemas), titles and genres from memory."""
        items = []
        explored = self.explored
        for i, s, e in zip(self.item_ids, self.scores, self.explanations, strict=True):
            info = item_info(i)
            item = {
                "item_id": i,
                "score": s,
                "title": info.title if info else "",
                "genres": info.genres if info else [],
                "explanation": e,
            }
            if explored and i in explored:
                item["explored"] = True
            items.append(item)
        return orjson.dumps(
            {
                "request_id": self.correlation_id,
                "user_id": self.user_id,
                "level": self.level,
                "model_version": self.model_version,
                "latency_ms": self.latency_ms,
                "items": items,
            }
        )
