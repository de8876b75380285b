"""recs.requests: recommendation requests for the serving worker over Kafka."""

from typing import Literal

from pydantic import Field

from streamrec.topics.base import DAY_MS, Event, TopicName, TopicSpec, UserId, UtcDatetime, utcnow

Priority = Literal["interactive", "prefetch", "background"]


class RecRequest(Event):
    """A request for recommendations, keyed by `user_id` (docs/topics.md has an example)."""

    schema_version: Literal[1] = 1
    correlation_id: str = Field(
        min_length=1, max_length=128, description="echoed in the reply, whose key it is"
    )
    user_id: UserId  # the rule the HTTP route applies to its path
    k: int = Field(20, ge=1, le=200, description="how many items")
    reply_to: TopicName = Field(
        "recs.responses",
        description="the topic the reply goes to; it must match STREAMREC_SERVING__REPLY_TOPICS "
        "(default recs.responses*) and exist, else the request is dead-lettered",
    )
    priority: Priority = Field("interactive", description="lower classes are shed first")
    principal: str = Field(
        "anonymous",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:@-]+$",
        description="the producing client's name: requests are rate limited per principal "
        "(auth.principal_rate_per_s) and it is kept in the impression's audit trail. A claim, "
        "not a proof: who may produce at all is the broker's ACLs' business",
    )
    recent_item_ids: list[str] = Field(
        default_factory=list, max_length=50, description="seen in this session: not recommended"
    )
    budget_ms: int = Field(
        150, ge=5, le=10_000, description="time for the answer, counted from sent_at"
    )
    sent_at: UtcDatetime = Field(
        default_factory=utcnow,
        description="ISO 8601 time the client sent it; without a zone it is UTC (default: "
        "when serving read it)",
    )


RECS_REQUESTS = TopicSpec(
    name="recs.requests",
    schema=RecRequest,
    key_field="user_id",
    description="requests answered by any serving worker of the consumer group",
    partitions=6,
    retention_ms=DAY_MS,
    # A lost request or reply is a client's timeout and retry; serving must go on while two
    # brokers of three are down.
    durable=False,
)
