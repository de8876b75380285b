"""recs.requests: recommendation requests for the serving worker over Kafka."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from streamrec.topics.base import DAY_MS, Event, TopicSpec, utcnow

Priority = Literal["interactive", "prefetch", "background"]


class RecRequest(Event):
    schema_version: Literal[1] = 1
    correlation_id: str = Field(min_length=1, max_length=128)
    user_id: str = Field(min_length=1, max_length=128)
    k: int = Field(20, ge=1, le=200)
    reply_to: str = Field("recs.responses", min_length=1, max_length=249)
    priority: Priority = "interactive"
    recent_item_ids: list[str] = Field(default_factory=list, max_length=50)
    budget_ms: int = Field(150, ge=5, le=10_000)
    sent_at: datetime = Field(default_factory=utcnow)


RECS_REQUESTS = TopicSpec(
    name="recs.requests",
    schema=RecRequest,
    key_field="user_id",
    description="requests answered by any serving worker of the consumer group",
    partitions=6,
    retention_ms=DAY_MS,
)
