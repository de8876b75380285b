"""Rebuilding the processor's state at start-up: history is state, news is change.

The processor keeps its state (item vectors, users' recent items, the reverse index) in
memory. On start-up it reads the topics with a plain confluent-kafka consumer and applies
them as state only (no refresh is issued for them), each partition up to a bound:
- state topics (events.interactions, candidates): up to their current end;
- change topics (catalog.items, catalog.vectors, registry.changes): up to where "news"
  starts. If the processor's consumer group has committed offsets, news starts there
  (changes made while it was down still get their refreshes); for a new group it starts at
  the current end (the candidates computed before the processor existed reflect them).

`Applied` records those bounds; they are committed as the group's offsets before the Faust
agents start (`commit`), and the agents also skip anything below them, so each message is
applied once and neither a first start nor a restart streams the history again.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import OFFSET_INVALID, Consumer, Message, TopicPartition

from streamrec.infra.settings import Settings
from streamrec.streams import codecs
from streamrec.streams.table_reader import TopicReader, end_offsets, topic_partitions
from streamrec.topics import (
    CANDIDATES,
    CATALOG_ITEMS,
    CATALOG_VECTORS,
    EVENTS_INTERACTIONS,
    REGISTRY_CHANGES,
    TopicSpec,
)
from streamrec.topics.base import Event
from streamrec.topics.errors import SchemaError

# Topics whose messages are changes (they cause refreshes); the others only feed state.
CHANGE_TOPICS = (CATALOG_ITEMS, CATALOG_VECTORS, REGISTRY_CHANGES)
STATE_TOPICS = (EVENTS_INTERACTIONS, CANDIDATES)

Applied = dict[tuple[str, int], int]


def _consumer(settings: Settings, group: str) -> Consumer:
    return Consumer(
        {
            **settings.kafka_config(),
            "group.id": group,
            "enable.auto.commit": False,
        }
    )


def _partitions(consumer: Consumer, spec: TopicSpec) -> list[TopicPartition]:
    return [TopicPartition(spec.name, p) for p in topic_partitions(consumer, spec.name)]


def bounds(settings: Settings, group: str) -> Applied:
    """Per partition of every input topic: the offset the start-up state is read up to."""
    consumer = _consumer(settings, group)
    try:
        out: Applied = {}
        for spec in STATE_TOPICS:
            for p, end in end_offsets(consumer, spec.name).items():
                out[(spec.name, p)] = end
        for spec in CHANGE_TOPICS:
            ends = end_offsets(consumer, spec.name)
            for tp in consumer.committed(_partitions(consumer, spec), timeout=10):
                known = tp.offset != OFFSET_INVALID and tp.offset >= 0
                out[(spec.name, tp.partition)] = tp.offset if known else ends[tp.partition]
        return out
    finally:
        consumer.close()


def commit(settings: Settings, group: str, applied: Applied) -> None:
    """Commit the start-up bounds as the group's offsets, so the Faust agents start right
    there instead of streaming the history past a skip (run before the group has members:
    one instance per group, ADR 0070)."""
    consumer = _consumer(settings, group)
    try:
        offsets = [TopicPartition(t, p, o) for (t, p), o in applied.items() if o > 0]
        if offsets:
            consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def read_until(
    settings: Settings,
    spec: TopicSpec,
    until: Applied,
    apply: Callable[[list[Message]], None],
    timeout_s: float = 120.0,
) -> int:
    """Feed every message of `spec` below `until[(topic, partition)]` to `apply`, in batches;
    `TopicReadTimeout` when that is not done within `timeout_s`."""
    want = {p: end for (topic, p), end in until.items() if topic == spec.name and end > 0}
    if not want:
        return 0
    count = 0
    with TopicReader(
        settings.kafka_config(), spec, group="streamrec-invalidation-bootstrap", until=want
    ) as reader:
        for batch in reader.read_to_end(timeout_s):
            apply(batch)
            count += len(batch)
    return count


def decode_or_none(spec: TopicSpec, value: bytes | None) -> Event | None:
    """The decoded event, or None for a message that is not one (dead-lettered when live)."""
    try:
        return codecs.decode(spec, value)
    except SchemaError:
        return None
