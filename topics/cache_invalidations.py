"""cache.invalidations: targeted refresh commands from the invalidation processor.

Never "delete everything": each command names one key to recompute ahead of its readers.
"""

from typing import Literal

from pydantic import Field

from streamrec.topics.base import DAY_MS, Event, TopicSpec, UtcDatetime, utcnow


class RefreshCommand(Event):
    schema_version: Literal[1] = 1
    target: Literal["user_candidates", "response_cache"] = "user_candidates"
    user_id: str = Field(min_length=1, max_length=128)
    reason: Literal[
        "item_upsert",
        "item_removal",
        "vector",
        "model_promotion",
        "index_swap",
        "trending",
        "manual",
    ]
    cause_ids: list[str] = Field(default_factory=list, description="what triggered it, coalesced")
    mode: Literal["refresh", "delete"] = "refresh"
    issued_at: UtcDatetime = Field(default_factory=utcnow)


CACHE_INVALIDATIONS = TopicSpec(
    name="cache.invalidations",
    schema=RefreshCommand,
    key_field="user_id",
    description="rate-limited, coalesced refresh commands per user",
    partitions=6,
    retention_ms=DAY_MS,
)
