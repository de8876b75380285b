"""dead.letters: messages a processor could not handle, with the reason; nothing is dropped."""

from typing import Literal

from pydantic import Field

from streamrec.topics.base import Event, TopicSpec, UtcDatetime, utcnow


class DeadLetter(Event):
    schema_version: Literal[1] = 1
    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    value: str = Field(description="the original value, utf-8 or base64 ('b64:' prefix)")
    reason: str
    processor: str
    failed_at: UtcDatetime = Field(default_factory=utcnow)


DEAD_LETTERS = TopicSpec(
    name="dead.letters",
    schema=DeadLetter,
    key_field="source_topic",
    description="poison messages from every processor, with the reason",
    partitions=1,
    retention_ms=30 * 24 * 3600 * 1000,
)
