"""Kafka clients: the broker they talk to, and the bulk producer of backfills."""

from __future__ import annotations

from streamrec.infra.settings.base import Section


class KafkaSettings(Section):
    """Clients' view of the broker; `bootstrap` empty means the local stack's broker."""

    bootstrap: str = ""
    default_partitions: int = 6
    replication_factor: int = 1
    client_id: str = "streamrec"


class ReplaySettings(Section):
    """Bulk producer tuning for backfills (throughput over latency)."""

    linger_ms: int = 20
    batch_size: int = 1_000_000
    compression: str = "lz4"
    queue_max_messages: int = 500_000
