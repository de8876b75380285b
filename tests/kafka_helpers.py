"""Test helpers that read topics with a plain confluent-kafka consumer."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition

from streamrec.infra.settings import Settings


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer({**settings.kafka_config(), "group.id": "t-offsets"})
    try:
        md = consumer.list_topics(topic, timeout=10).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in md.partitions
        }
    finally:
        consumer.close()


def commit_end_offsets(settings: Settings, group: str, *topics: str) -> dict[str, dict[int, int]]:
    """Commit the current end of `topics` for `group`, so it starts after what is there
    (rather than re-reading a log that grows with every test on the shared stack)."""
    ends = {topic: end_offsets(settings, topic) for topic in topics}
    consumer = Consumer({**settings.kafka_config(), "group.id": group})
    try:
        consumer.commit(
            offsets=[
                TopicPartition(topic, p, o)
                for topic, parts in ends.items()
                for p, o in parts.items()
            ],
            asynchronous=False,
        )
    finally:
        consumer.close()
    return ends


def read_range(
    settings: Settings,
    topic: str,
    start: dict[int, int],
    end: dict[int, int],
    timeout_s: float = 60.0,
) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) between two offset snapshots of `topic`."""
    want = {p: end[p] - start.get(p, 0) for p in end if end[p] > start.get(p, 0)}
    if not want:
        return []
    consumer = Consumer(
        {
            **settings.kafka_config(),
            "group.id": "t-read",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, start.get(p, 0)) for p in want])
    out: list[tuple[bytes | None, bytes | None]] = []
    remaining = dict(want)
    deadline = time.monotonic() + timeout_s
    try:
        while any(remaining.values()) and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=1.0):
                if msg.error():
                    continue
                p = msg.partition()
                if msg.offset() < end[p] and remaining.get(p, 0) > 0:
                    out.append((msg.key(), msg.value()))
                    remaining[p] -= 1
    finally:
        consumer.close()
    assert not any(remaining.values()), f"timed out with {remaining} messages unread"
    return out


def wait_for(predicate, timeout_s: float, what: str, interval: float = 0.1):
    """Poll `predicate` until truthy (returning its value) or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval)  # polling a real condition with a deadline
