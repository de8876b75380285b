"""API keys on the compacted auth.keys topic: publish, list, and follow them.

Responsibilities:
- `publish(settings, record)`: write a key's record (created or revoked), waiting for the
  broker's acknowledgement, so `streamrec keys create|revoke` returns once it is durable;
- `read_keys(settings)`: every key's latest record (the topic read to its end);
- `KeyFollower`: a daemon thread of each serving process that reads auth.keys from the
  beginning and then follows it into a `serving.auth.KeyRing`. `loaded` is set once it has
  caught up with the end offsets it saw at start. The consumer's `fetch.wait.max.ms` is
  `auth.keys_fetch_wait_ms` (100 ms), so a revocation reaches every process well within 1 s.

Failure policy: a malformed record is skipped and counted; a broker outage leaves the last
known keys in place (revocations made meanwhile apply when it comes back).
"""

from __future__ import annotations

import uuid

from streamrec.infra.settings import Settings
from streamrec.serving.auth import KeyRing
from streamrec.streams.producer import flush, latency_producer, produce_event
from streamrec.streams.table_reader import TableFollower, TopicReader
from streamrec.topics import AUTH_KEYS, ApiKeyRecord


def publish(settings: Settings, record: ApiKeyRecord) -> None:
    producer = latency_producer(settings, **{"client.id": "streamrec-keys"})
    produce_event(producer, AUTH_KEYS, record)
    flush(producer, timeout_s=30)


def read_keys(settings: Settings) -> dict[str, ApiKeyRecord]:
    """Key id -> its latest record."""
    reader = TopicReader(settings.kafka_config(), AUTH_KEYS, group=f"keys-{uuid.uuid4().hex[:8]}")
    found: dict[str, ApiKeyRecord] = {}
    try:
        for batch in reader.read_to_end(timeout_s=30):
            for change in reader.decode(batch):
                if isinstance(change.event, ApiKeyRecord):
                    found[change.event.key_id] = change.event
                elif change.key is not None:
                    found.pop(change.key, None)
    finally:
        reader.close()
    return found


class KeyFollower(TableFollower):
    """Follows auth.keys into a `KeyRing` on a daemon thread."""

    def __init__(self, settings: Settings, ring: KeyRing) -> None:
        super().__init__(
            settings,
            AUTH_KEYS,
            "serving-keys",
            poll_timeout_s=0.1,
            config={"fetch.wait.max.ms": settings.auth.keys_fetch_wait_ms},
        )
        self.ring = ring

    def apply(self, event: ApiKeyRecord) -> None:
        self.ring.apply(event)

    def forget(self, key: str) -> None:  # a tombstone: the key is gone
        self.ring.forget(key)
