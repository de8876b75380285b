"""What every topic declares: a small, inert spec plus a versioned pydantic schema.

A `TopicSpec` carries the name, the creation config (partitions, cleanup policy, retention)
and which schema field is the message key. It does no I/O: `streams/` creates topics and
encodes messages. Every schema derives from `Event`, which fixes its `schema_version` so a
consumer can refuse a message written for another version instead of misreading it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

DAY_MS = 24 * 3600 * 1000
FOREVER = -1

# The user ids every way in accepts (HTTP path, request topic): the characters that are safe
# in a URL path segment, a Redis key and a log line. `serving.schemas` re-exports them.
USER_ID_PATTERN = r"^[A-Za-z0-9_.:@-]+$"
USER_ID_MAX_LENGTH = 128
UserId = Annotated[str, Field(min_length=1, max_length=USER_ID_MAX_LENGTH, pattern=USER_ID_PATTERN)]
# A legal Kafka topic name (the broker's own rule), e.g. a request's reply topic.
TOPIC_NAME_PATTERN = r"^[A-Za-z0-9._-]+$"
TopicName = Annotated[str, Field(min_length=1, max_length=249, pattern=TOPIC_NAME_PATTERN)]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    # A time without a zone is UTC (what a foreign producer means by "2026-12-01T19:33:00"):
    # left naive, it raises TypeError wherever it meets an aware time downstream.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value if value.tzinfo is UTC else value.astimezone(UTC)


# Every time field of every contract: naive values are read as UTC, aware ones converted.
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class Event(BaseModel):
    """Base of every message schema: frozen, strict about unknown fields, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1


class TopicSpec(BaseModel):
    """One topic: name, schema, key and creation config."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    schema_: type[Event] = Field(alias="schema")
    key_field: str | None = Field(description="schema field whose value is the message key")
    description: str
    partitions: int | None = Field(None, description="None: the cluster setting's default")
    cleanup_policy: Literal["delete", "compact", "compact,delete"] = "delete"
    retention_ms: int = 7 * DAY_MS
    value_format: Literal["json", "vector"] = "json"
    extra_config: dict[str, str] = Field(default_factory=dict)
    durable: bool = Field(
        True,
        description="an acknowledged write must survive the loss of a broker: on a replicated "
        "cluster it needs min.insync.replicas copies; False (request/reply traffic, which the "
        "client retries) keeps writing while a single copy is left",
    )

    @property
    def schema(self) -> type[Event]:  # type: ignore[override]
        return self.schema_

    def config(self) -> dict[str, str]:
        """The topic-level configs to create or alter it with."""
        cfg = {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
        }
        if "compact" in self.cleanup_policy:
            # Keep tombstones and removals visible long enough for a slow consumer to see them.
            cfg["delete.retention.ms"] = str(DAY_MS)
            cfg["min.cleanable.dirty.ratio"] = "0.1"
        cfg.update(self.extra_config)
        return cfg

    def key_of(self, event: Event) -> bytes | None:
        if self.key_field is None:
            return None
        return str(getattr(event, self.key_field)).encode()
