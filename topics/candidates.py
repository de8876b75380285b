"""candidates: a summary each time a user's precomputed candidate list is rewritten.

The list itself lives in Redis (the request path reads one key); this topic is its audit
trail and what analytics and the invalidation processor see.
"""

from typing import Literal

from pydantic import Field

from streamrec.topics.base import DAY_MS, Event, TopicSpec, UtcDatetime, utcnow


class CandidatesUpdated(Event):
    schema_version: Literal[1] = 1
    user_id: str = Field(min_length=1, max_length=128)
    count: int = Field(ge=0)
    sources: dict[str, int] = Field(default_factory=dict, description="candidates per source")
    model_version: str
    computed_at: UtcDatetime = Field(default_factory=utcnow)


CANDIDATES = TopicSpec(
    name="candidates",
    schema=CandidatesUpdated,
    key_field="user_id",
    description="latest candidate-list summary per user; compacted",
    partitions=6,
    cleanup_policy="compact",
    retention_ms=7 * DAY_MS,
)
