"""What every topic declares: a small, inert spec plus a versioned pydantic schema.

A `TopicSpec` carries the name, the creation config (partitions, cleanup policy, retention)
and which schema field is the message key. It does no I/O: `streams/` creates topics and
encodes messages. Every schema derives from `Event`, which fixes its `schema_version` so a
consumer can refuse a message written for another version instead of misreading it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DAY_MS = 24 * 3600 * 1000
FOREVER = -1


def utcnow() -> datetime:
    return datetime.now(UTC)


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
