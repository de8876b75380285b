"""recs.served: one impression per answer, for analytics and experiments."""

from typing import Literal

from pydantic import Field

from streamrec.topics.base import Event, TopicSpec, UtcDatetime, utcnow
from streamrec.topics.recs_responses import Level


class Impression(Event):
    schema_version: Literal[1] = 1
    event_id: str = Field(min_length=1, max_length=128)
    request_id: str
    user_id: str
    item_ids: list[str]
    level: Level
    model_version: str | None = None
    variant: str = "control"
    explored_item_ids: list[str] = Field(
        default_factory=list,
        description="the items of item_ids that exploration put in (not ranked); absent "
        "(empty) when the answer explored nothing",
    )
    channel: Literal["http", "kafka"] = "http"
    latency_ms: float = Field(ge=0)
    principal: str = Field(
        "",
        max_length=200,
        description="who asked (the audit trail): `key:<key id>`, `jwt:<subject>`, or for the "
        "request topic `topic:<principal>`; empty when serving ran with auth.mode=off",
    )
    served_at: UtcDatetime = Field(default_factory=utcnow)


RECS_SERVED = TopicSpec(
    name="recs.served",
    schema=Impression,
    key_field="user_id",
    description="what was served to whom, at which level and in which experiment variant",
    partitions=6,
)
