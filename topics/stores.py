"""Contracts of the precomputed stores the request path reads (Redis keys and their values).

Like topics, each key layout is declared once with its pydantic schema; writers (processors)
and readers (serving) import it instead of spelling key strings.

| key | type | written by | read by |
| --- | --- | --- | --- |
| `cand:{user_id}` | string, `CandidateList` (stored by `candidate_codec`) | candidates | serving |
| `cand:hist:{user_id}` | list, item ids newest first | candidates processor | serving (history) |
| `popular:{window}` | zset item_id -> score | trending processor | serving (POPULAR), candidates |
| `catalog:removed` | set of item ids | content pipeline, invalidation | serving (filters at once) |
| `content:hash` | hash item_id -> content hash | content pipeline | content pipeline |
| `llm:{key}` | string, JSON `EnrichResult` | LLM enricher | serving (explanations) |
| `workers:{name}:{pid}` | string, JSON `WorkerBeat`, TTL | every worker (metrics) | dashboard |
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from streamrec.topics.base import Event, UtcDatetime, utcnow


class StoreKey(BaseModel):
    """A Redis key layout: `pattern` formatted with named fields, its type and value schema."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    pattern: str
    redis_type: Literal["string", "zset", "set", "hash", "list"]
    schema_: type[BaseModel] | None = Field(None, alias="schema")
    ttl_s: int | None = None
    description: str

    def key(self, **fields: str) -> str:
        return self.pattern.format(**fields)


MAX_CANDIDATES = 1000  # a stored list's bound


class Candidate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    item_id: str
    score: float
    sources: list[str] = Field(description="e.g. two_tower, covisit, content, trending")


class CandidateList(Event):
    schema_version: Literal[1] = 1
    user_id: str
    model_version: str
    computed_at: UtcDatetime = Field(default_factory=utcnow)
    items: list[Candidate] = Field(max_length=MAX_CANDIDATES)


USER_CANDIDATES = StoreKey(
    pattern="cand:{user_id}",
    redis_type="string",
    schema=CandidateList,
    ttl_s=7 * 24 * 3600,
    description="a user's precomputed candidates (up to 500), best first; stored in the "
    "compact form of topics.candidate_codec (encode / decode / read_ranked)",
)

USER_HISTORY = StoreKey(
    pattern="cand:hist:{user_id}",
    redis_type="list",
    description="a user's recent item ids, newest first, at most candidates.history_len (50): "
    "the history the ranker was trained on (Feast's session view keeps the last 10)",
)

POPULAR = StoreKey(
    pattern="popular:{window}",
    redis_type="zset",
    description="trending items per window ('1h', '24h'): the POPULAR fallback list",
)

REMOVED_ITEMS = StoreKey(
    pattern="catalog:removed",
    redis_type="set",
    description="items removed from the catalog; serving filters them out immediately",
)

CONTENT_HASHES = StoreKey(
    pattern="content:hash",
    redis_type="hash",
    description="item id -> content hash of its last published vector (content pipeline)",
)

LLM_RESULT = StoreKey(
    pattern="llm:{key}",
    redis_type="string",
    description="cached LLM enrichment result (JSON EnrichResult) by its dedupe key",
)

WORKER_HEARTBEAT = StoreKey(
    pattern="workers:{name}:{pid}",
    redis_type="string",
    ttl_s=8,
    description=(
        "a live worker (JSON streams.metrics.WorkerBeat); expires when it stops beating; a"
        " clean stop rewrites it with state=stopped, kept analytics.stopped_ttl_s"
    ),
)
