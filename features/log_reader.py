"""Reading a whole topic directly, from its first offset to the end offsets taken at start.

No consumer group is involved (partitions are assigned, nothing is committed), so a backfill
never disturbs a running processor's group and always sees the whole log. Messages come back
per partition in offset order, which is the order a processor sees one user's events in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from streamrec.features.errors import BackfillError
from streamrec.infra.settings import Settings


def read_topic(
    settings: Settings, topic: str, timeout_s: float = 300.0
) -> Iterator[tuple[int, int, bytes | None, bytes | None]]:
    """Yield (partition, offset, key, value) of every message up to the current end."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "streamrec-backfill-reader",  # librdkafka wants one; never committed
            "enable.auto.commit": False,
            "fetch.max.bytes": 52_428_800,
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=10).topics[topic]
        if md.error is not None:
            raise BackfillError(f"cannot read {topic}: {md.error}")
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in md.partitions
        }
        pending = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(pending)])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise BackfillError(f"{topic} not read to its end in {timeout_s:.0f} s")
            for msg in consumer.consume(10_000, timeout=0.5):
                if msg.error():
                    continue
                p, offset = msg.partition(), msg.offset()
                if p in pending:
                    yield p, offset, msg.key(), msg.value()
                    if offset >= ends[p] - 1:
                        pending.discard(p)
    except KafkaException as exc:
        raise BackfillError(f"cannot read {topic}: {exc}") from exc
    finally:
        consumer.close()
