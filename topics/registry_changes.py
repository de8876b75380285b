"""registry.changes: a model or index version was published (a gated candidate), promoted or
rolled back."""

from typing import Any, Literal

from pydantic import Field

from streamrec.topics.base import FOREVER, Event, TopicSpec, UtcDatetime, utcnow


class RegistryChange(Event):
    schema_version: Literal[1] = 1
    kind: Literal["ranker", "retriever", "index"]
    name: str
    version: str
    action: Literal["promote", "rollback", "publish"]
    at: UtcDatetime = Field(default_factory=utcnow)
    # The evaluation gate's verdict and figures for a published candidate (optional, so
    # messages without it still validate).
    gate: dict[str, Any] | None = None


REGISTRY_CHANGES = TopicSpec(
    name="registry.changes",
    schema=RegistryChange,
    key_field="kind",
    description="model and index promotions; compacted to the current version per kind",
    partitions=1,
    cleanup_policy="compact",
    retention_ms=FOREVER,
)
