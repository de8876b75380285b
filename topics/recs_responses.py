"""recs.responses: answers to recs.requests, carrying the request's correlation id."""

from typing import Literal

from pydantic import Field

from streamrec.topics.base import DAY_MS, Event, TopicSpec, UtcDatetime, utcnow

Level = Literal["FULL", "STALE_FEATURES", "SIMPLE_RANKING", "POPULAR"]


class RecommendedItem(Event):
    item_id: str
    score: float
    explanation: str | None = None
    explored: bool = Field(
        False,
        description="put in by exploration (a least-shown live item, not ranked); absent "
        "means false, so answers without exploration are unchanged",
    )


class RecResponse(Event):
    schema_version: Literal[1] = 1
    correlation_id: str
    user_id: str
    items: list[RecommendedItem]
    level: Level
    model_version: str | None = None
    latency_ms: float = Field(ge=0)
    served_at: UtcDatetime = Field(default_factory=utcnow)


RECS_RESPONSES = TopicSpec(
    name="recs.responses",
    schema=RecResponse,
    key_field="correlation_id",
    description="default reply topic for recs.requests",
    partitions=6,
    retention_ms=DAY_MS,
    # A lost request or reply is a client's timeout and retry; serving must go on while two
    # brokers of three are down.
    durable=False,
)
