"""features.changed: a user's online features were rewritten (the candidates processor listens)."""

from typing import Literal

from pydantic import Field

from streamrec.topics.base import DAY_MS, Event, TopicSpec, UtcDatetime, utcnow


class FeaturesChanged(Event):
    schema_version: Literal[1] = 1
    user_id: str = Field(min_length=1, max_length=128)
    interactions: int = Field(ge=0, description="interactions counted so far")
    last_event_ts: UtcDatetime
    changed_at: UtcDatetime = Field(default_factory=utcnow)


FEATURES_CHANGED = TopicSpec(
    name="features.changed",
    schema=FeaturesChanged,
    key_field="user_id",
    description="compact notice that a user's online features changed",
    partitions=6,
    retention_ms=DAY_MS,
)
