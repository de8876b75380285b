"""registry.changes: a model or index version was published (a gated candidate), promoted or
rolled back, or a ranker's canary share changed."""

from typing import Any, Literal

from pydantic import Field

from streamrec.topics.base import FOREVER, Event, TopicSpec, UtcDatetime, utcnow


class RegistryChange(Event):
    schema_version: Literal[1] = 1
    kind: Literal["ranker", "retriever", "index"]
    name: str
    version: str
    # canary: `version` now serves `rollout["share"]` of the users beside the promoted one.
    # A rollout's rollback names the version serving everyone again in `version`, and the
    # candidate, the reason and the figures in `rollout`.
    action: Literal["promote", "rollback", "publish", "canary"]
    at: UtcDatetime = Field(default_factory=utcnow)
    # The evaluation gate's verdict and figures for a published candidate (optional, so
    # messages without it still validate).
    gate: dict[str, Any] | None = None
    # The rollout controller's decision for a canary: candidate, share, reason, figures.
    rollout: dict[str, Any] | None = None


REGISTRY_CHANGES = TopicSpec(
    name="registry.changes",
    schema=RegistryChange,
    key_field="kind",
    description="model and index promotions; compacted to the current version per kind",
    partitions=1,
    cleanup_policy="compact",
    retention_ms=FOREVER,
)
