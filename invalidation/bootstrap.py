"""Rebuilding the processor's state at start-up: history is state, news is change.

The processor keeps its state (item vectors, users' recent items, the reverse index) in
memory. On start-up it reads the state topics up to their current end with a plain
confluent-kafka consumer and applies them as state only (no refresh is issued for them).

For the change topics it then decides where "news" starts, per partition:
- the processor's consumer group has committed offsets: everything from the committed
  offset on is news (changes made while it was down still get their refreshes);
- a new group: everything up to the end at start-up is history (the candidates computed
  before the processor existed already reflect it), so only later messages are news.

The Faust agents consume from the committed offset (or the earliest) and skip the effects
of messages below `news_from[(topic, partition)]`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import OFFSET_INVALID, Consumer, Message, TopicPartition

from infra.settings import Settings
from streams import codecs
from topics import (
    CANDIDATES,
    CATALOG_ITEMS,
    CATALOG_VECTORS,
    EVENTS_INTERACTIONS,
    REGISTRY_CHANGES,
    TopicSpec,
)
from topics.base import Event
from topics.errors import SchemaError

# Topics whose messages are changes (they cause refreshes); the others only feed state.
CHANGE_TOPICS = (CATALOG_ITEMS, CATALOG_VECTORS, REGISTRY_CHANGES)
STATE_TOPICS = (EVENTS_INTERACTIONS, CATALOG_VECTORS, CATALOG_ITEMS, CANDIDATES)

NewsFrom = dict[tuple[str, int], int]


def _partitions(consumer: Consumer, spec: TopicSpec) -> list[TopicPartition]:
    md = consumer.list_topics(spec.name, timeout=10).topics[spec.name]
    return [TopicPartition(spec.name, p) for p in sorted(md.partitions)]


def end_offsets(consumer: Consumer, spec: TopicSpec) -> dict[int, int]:
    return {
        tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1]
        for tp in _partitions(consumer, spec)
    }


def news_from(settings: Settings, group: str) -> NewsFrom:
    """Per change-topic partition: the first offset whose effects are applied."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    try:
        out: NewsFrom = {}
        for spec in CHANGE_TOPICS:
            ends = end_offsets(consumer, spec)
            committed = consumer.committed(_partitions(consumer, spec), timeout=10)
            for tp in committed:
                known = tp.offset not in (OFFSET_INVALID,) and tp.offset >= 0
                out[(spec.name, tp.partition)] = tp.offset if known else ends[tp.partition]
        return out
    finally:
        consumer.close()


def read_to_end(
    settings: Settings,
    spec: TopicSpec,
    apply: Callable[[list[Message]], None],
    timeout_s: float = 120.0,
) -> int:
    """Feed every message of `spec` up to its end at call time to `apply`, in batches."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "streamrec-invalidation-bootstrap",
            "enable.auto.commit": False,
        }
    )
    try:
        ends = end_offsets(consumer, spec)
        want = {p: e for p, e in ends.items() if e > 0}
        if not want:
            return 0
        consumer.assign([TopicPartition(spec.name, p, 0) for p in want])
        done: set[int] = set()
        count = 0
        deadline = time.monotonic() + timeout_s
        while len(done) < len(want) and time.monotonic() < deadline:
            batch = []
            for msg in consumer.consume(5000, timeout=0.5):
                if msg.error():
                    continue
                p = msg.partition()
                if msg.offset() < want[p]:
                    batch.append(msg)
                if msg.offset() >= want[p] - 1:
                    done.add(p)
            # A compacted partition may end on a removed offset: its low watermark tells.
            for p in set(want) - done:
                low, high = consumer.get_watermark_offsets(TopicPartition(spec.name, p), timeout=10)
                position = consumer.position([TopicPartition(spec.name, p)])[0].offset
                if position >= want[p] or high <= low:
                    done.add(p)
            if batch:
                apply(batch)
                count += len(batch)
        return count
    finally:
        consumer.close()


def decode_or_none(spec: TopicSpec, value: bytes | None) -> Event | None:
    """The decoded event, or None for a message that is not one (dead-lettered when live)."""
    try:
        return codecs.decode(spec, value)
    except SchemaError:
        return None
