"""Both clients against the real broker: confluent-kafka (librdkafka) and Faust (aiokafka).

This is the test behind the Kafka version choice (docs/adr/0001-kafka-version.md).
"""

from datetime import UTC, datetime

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from streamrec.processors.interaction_counter import counter_key
from streamrec.streams import codecs
from streamrec.streams.producer import DeliveryTracker, bulk_producer, flush, produce_event
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import DEAD_LETTERS, EVENTS_INTERACTIONS, DeadLetter, Interaction
from tests.kafka_helpers import commit_end_offsets, end_offsets, read_range, wait_for

pytestmark = pytest.mark.integration


def _events(unique: str, n: int) -> list[Interaction]:
    return [
        Interaction(
            event_id=f"{unique}:{i}",
            user_id=f"u-{unique}-{i % 7}",
            item_id=str(i),
            kind="click",
            ts=datetime.now(UTC),
        )
        for i in range(n)
    ]


def test_confluent_kafka_round_trip(stack, unique):
    before = end_offsets(stack, EVENTS_INTERACTIONS.name)
    producer = bulk_producer(stack)
    tracker = DeliveryTracker()
    sent = _events(unique, 50)
    for event in sent:
        produce_event(producer, EVENTS_INTERACTIONS, event, tracker)
    flush(producer)
    assert tracker.delivered == 50
    got = read_range(
        stack, EVENTS_INTERACTIONS.name, before, end_offsets(stack, EVENTS_INTERACTIONS.name)
    )
    decoded = [codecs.decode(EVENTS_INTERACTIONS, v) for _k, v in got]
    mine = sorted(
        (e for e in decoded if e.event_id.startswith(unique)), key=lambda e: int(e.item_id)
    )
    assert mine == sent
    # Keyed by user: all of one user's events are on one partition.
    consumer = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": unique})
    try:
        parts = {}
        for p, end in end_offsets(stack, EVENTS_INTERACTIONS.name).items():
            if end > before.get(p, 0):
                consumer.assign([TopicPartition(EVENTS_INTERACTIONS.name, p, before.get(p, 0))])
                for msg in consumer.consume(end - before.get(p, 0), timeout=5):
                    parts.setdefault(msg.key(), set()).add(p)
        assert parts and all(len(ps) == 1 for ps in parts.values())
    finally:
        consumer.close()


def test_faust_agent_consumes_and_dead_letters_a_poison_message(stack, unique):
    group = f"t-counter-{unique}"
    store = redis.Redis.from_url(stack.redis_url)
    # The group starts at the log end: the shared stack's log grows with every test.
    commit_end_offsets(stack, group, EVENTS_INTERACTIONS.name)
    dlq_before = end_offsets(stack, DEAD_LETTERS.name)
    producer = bulk_producer(stack)
    with WorkerProcess(stack, "interaction-counter", group) as worker:
        producer.produce(EVENTS_INTERACTIONS.name, key=b"poison", value=b'{"user_id": 5}')
        for event in _events(unique, 20):
            produce_event(producer, EVENTS_INTERACTIONS, event)
        flush(producer)
        wait_for(
            lambda: int(store.get(counter_key(group)) or 0) >= 20,
            60,
            "the agent to count 20 new events after the poison message",
        )
        assert worker.alive()
        assert int(store.get(counter_key(group, dead=True)) or 0) == 1
    letters = read_range(
        stack, DEAD_LETTERS.name, dlq_before, end_offsets(stack, DEAD_LETTERS.name)
    )
    decoded = [codecs.decode(DEAD_LETTERS, v) for _k, v in letters]
    mine = [
        d
        for d in decoded
        if isinstance(d, DeadLetter) and d.processor == "interaction-counter" and d.key == "poison"
    ]
    assert len(mine) == 1
    assert mine[0].value == '{"user_id": 5}'
    assert "Field required" in mine[0].reason
    assert mine[0].offset is not None
