"""llm.enrich.requests and llm.enrich.results: LLM work, off the request path."""

from typing import Literal

from pydantic import Field

from streamrec.topics.base import DAY_MS, FOREVER, Event, TopicSpec, UtcDatetime, utcnow

EnrichKind = Literal["item_description", "item_classification", "explanation"]


class EnrichRequest(Event):
    schema_version: Literal[1] = 1
    key: str = Field(min_length=1, max_length=256, description="dedupe key, e.g. kind:item[:user]")
    kind: EnrichKind
    item_id: str
    user_id: str | None = None
    context: dict[str, str] = Field(default_factory=dict)
    priority: float = Field(0.0, description="higher first (e.g. item popularity)")
    requested_at: UtcDatetime = Field(default_factory=utcnow)
    expires_at: UtcDatetime | None = Field(None, description="dropped unanswered after this")


class EnrichResult(Event):
    schema_version: Literal[1] = 1
    key: str
    kind: EnrichKind
    item_id: str
    user_id: str | None = None
    text: str
    labels: list[str] = Field(default_factory=list)
    model: str
    produced_at: UtcDatetime = Field(default_factory=utcnow)


LLM_ENRICH_REQUESTS = TopicSpec(
    name="llm.enrich.requests",
    schema=EnrichRequest,
    key_field="key",
    description="enrichment work for the rate-limited LLM enricher",
    partitions=3,
    retention_ms=DAY_MS,
)

LLM_ENRICH_RESULTS = TopicSpec(
    name="llm.enrich.results",
    schema=EnrichResult,
    key_field="key",
    description="enrichment results; compacted to the latest per key (the cache's source)",
    partitions=3,
    cleanup_policy="compact",
    retention_ms=FOREVER,
)
