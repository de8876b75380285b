"""Consumer lag of any group: committed offsets against end offsets, via the AdminClient.

Works for every consumer group (Faust or plain confluent-kafka) without touching the
workers; the dashboard, the analytics benchmark and tests read it. Lag per topic is the sum
over partitions of `end - committed`. A partition the group has not committed yet counts
from the partition's start when `topics` names it (a consumer that has not caught up on it),
and is skipped otherwise.
"""

from __future__ import annotations

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from streamrec.infra.settings import Settings
from streamrec.streams.errors import LagError

Lags = dict[str, dict[str, int]]


def admin_client(settings: Settings, **extra: object) -> AdminClient:
    return AdminClient({**settings.kafka_config(), "socket.timeout.ms": 3000, **extra})


def consumer_lags(
    admin: AdminClient,
    groups: list[str] | None = None,
    topics: list[str] | None = None,
    prefix: str = "streamrec-",
    timeout_s: float = 3.0,
) -> Lags:
    """group -> topic -> lag for `groups` (default: every group named `prefix*`)."""
    try:
        if groups is None:
            listing = admin.list_consumer_groups(request_timeout=timeout_s).result()
            groups = [g.group_id for g in listing.valid if g.group_id.startswith(prefix)]
        committed: dict[str, dict[tuple[str, int], int]] = {}
        for group in groups:
            fut = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=timeout_s
            )[group]
            committed[group] = {
                (tp.topic, tp.partition): tp.offset
                for tp in fut.result().topic_partitions
                if tp.offset >= 0
            }
        wanted = {key for offsets in committed.values() for key in offsets}
        if topics:
            meta = admin.list_topics(timeout=timeout_s).topics
            wanted |= {(t, p) for t in topics if t in meta for p in meta[t].partitions}
        ends = _offsets(admin, wanted, OffsetSpec.latest(), timeout_s)
        starts = _offsets(admin, wanted, OffsetSpec.earliest(), timeout_s) if topics else {}
    except KafkaException as exc:
        raise LagError(f"cannot read consumer lag: {exc}") from exc
    lags: Lags = {}
    for group, offsets in committed.items():
        by_topic: dict[str, int] = {}
        for (topic, partition), end in ends.items():
            done = offsets.get((topic, partition))
            if done is None:
                if not topics or topic not in topics:
                    continue
                done = starts.get((topic, partition), 0)
            by_topic[topic] = by_topic.get(topic, 0) + max(0, end - done)
        if by_topic:
            lags[group] = by_topic
    return lags


def partition_lags(
    admin: AdminClient, group: str, parts: set[tuple[str, int]], timeout_s: float = 3.0
) -> dict[tuple[str, int], int | None]:
    """`end - committed` of each of `parts` for `group`; None where it has not committed."""
    if not parts:
        return {}
    try:
        wanted = [TopicPartition(t, p) for t, p in sorted(parts)]
        fut = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, wanted)], request_timeout=timeout_s
        )[group]
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in fut.result().topic_partitions
            if tp.offset >= 0
        }
        ends = _offsets(admin, parts, OffsetSpec.latest(), timeout_s)
    except KafkaException as exc:
        raise LagError(f"cannot read the lag of {group}: {exc}") from exc
    return {
        key: max(0, end - committed[key]) if key in committed else None for key, end in ends.items()
    }


def _offsets(
    admin: AdminClient, parts: set[tuple[str, int]], spec: OffsetSpec, timeout_s: float
) -> dict[tuple[str, int], int]:
    if not parts:
        return {}
    futures = admin.list_offsets(
        {TopicPartition(t, p): spec for t, p in parts}, request_timeout=timeout_s
    )
    return {(tp.topic, tp.partition): fut.result().offset for tp, fut in futures.items()}
