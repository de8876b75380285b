"""auth.keys: the API keys of the serving API, as hashes (compacted: the latest per key id)."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from streamrec.topics.base import FOREVER, Event, TopicSpec, UserId, UtcDatetime, utcnow
from streamrec.topics.recs_requests import Priority

KeyScope = Literal["user", "service"]


class ApiKeyRecord(Event):
    """One API key's state, keyed by `key_id`. Only the key's SHA-256 is kept: the key itself
    is shown once, by `streamrec keys create`. A revoked key keeps its record (`revoked_at`),
    so every follower learns of the revocation and `keys list` still shows it."""

    schema_version: Literal[1] = 1
    key_id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9]+$")
    key_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the whole key, hex")
    name: str = Field("", max_length=200, description="what the key is for (free text)")
    scope: KeyScope = Field(description="user: only `subject`'s recommendations; service: any")
    subject: UserId | None = Field(None, description="the user a user-scoped key may ask for")
    priority: Priority = Field(
        "interactive", description="the highest admission class its requests get"
    )
    rate_per_s: float | None = Field(
        None, gt=0, description="this key's request rate limit; None: auth.key_rate_per_s"
    )
    created_at: UtcDatetime = Field(default_factory=utcnow)
    revoked_at: UtcDatetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def revoke(self, at: datetime | None = None) -> "ApiKeyRecord":
        return self.model_copy(update={"revoked_at": at or utcnow()})


AUTH_KEYS = TopicSpec(
    name="auth.keys",
    schema=ApiKeyRecord,
    key_field="key_id",
    description="API key hashes, scopes and revocations, followed by every serving process",
    partitions=1,
    cleanup_policy="compact",
    retention_ms=FOREVER,
)
