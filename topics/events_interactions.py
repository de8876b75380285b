"""events.interactions: what users did, keyed by user so one user's events stay in order."""

from typing import Literal

from pydantic import Field

from streamrec.topics.base import FOREVER, Event, TopicSpec, UtcDatetime

InteractionKind = Literal["view", "click", "watch", "rating", "like", "skip", "purchase"]


class Interaction(Event):
    """One user-item interaction at event time `ts`."""

    schema_version: Literal[1] = 1
    event_id: str = Field(min_length=1, max_length=128, description="deterministic per source row")
    user_id: str = Field(min_length=1, max_length=128)
    item_id: str = Field(min_length=1, max_length=128)
    kind: InteractionKind = "view"
    rating: float | None = Field(None, ge=0, le=10)
    ts: UtcDatetime = Field(description="event time")
    source: str = Field("app", max_length=64)


EVENTS_INTERACTIONS = TopicSpec(
    name="events.interactions",
    schema=Interaction,
    key_field="user_id",
    description="the interaction log every feature, candidate and model is rebuilt from",
    partitions=6,
    cleanup_policy="delete",
    # The log is the source of truth for backfills and training: kept until removed by hand.
    retention_ms=FOREVER,
)
