"""Poison messages of any size, and failures a Faust agent does not handle, with the real
broker and Redis, through the interaction counter (the smallest Faust processor).

- An oversized message (1,000,000 bytes, 4 bytes a character) is dead-lettered like any
  other: the letter fits, keeps its coordinates, and every letter is counted.
- A batch that fails ends the worker (exit status `EXIT_STUCK`, heartbeat `stuck` with the
  reason) before its offsets are committed; the restarted worker redoes it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from streamrec.processors.interaction_counter import NAME, counter_key
from streamrec.streams import codecs, metrics
from streamrec.streams.dead_letters import MAX_LETTER_BYTES
from streamrec.streams.producer import bulk_producer, flush, produce_event
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import DEAD_LETTERS, EVENTS_INTERACTIONS, DeadLetter, Interaction
from tests.kafka_helpers import commit_end_offsets, end_offsets, read_range, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _events(unique: str, n: int) -> list[Interaction]:
    return [
        Interaction(
            event_id=f"{unique}:{i}",
            user_id=f"u-{unique}-{i % 5}",
            item_id=str(i),
            ts=datetime.now(UTC),
        )
        for i in range(n)
    ]


def _commit_end(settings, group: str) -> dict[int, int]:
    """The group starts after everything already in events.interactions."""
    return commit_end_offsets(settings, group, EVENTS_INTERACTIONS.name)[EVENTS_INTERACTIONS.name]


def _committed(settings, group: str) -> int:
    consumer = Consumer({**settings.kafka_config(), "group.id": group})
    try:
        parts = [
            TopicPartition(EVENTS_INTERACTIONS.name, p)
            for p in range(EVENTS_INTERACTIONS.partitions)
        ]
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def test_an_oversized_poison_message_is_dead_lettered_with_its_coordinates_and_counted(
    stack, unique
):
    group = f"t-poison-{unique}"
    store = redis.Redis.from_url(stack.redis_url)
    _commit_end(stack, group)
    letters_before = end_offsets(stack, DEAD_LETTERS.name)
    # The producer takes what the broker takes (1 MB a batch); the poison is at the limit.
    producer = bulk_producer(stack, **{"message.max.bytes": 2_000_000})
    huge = "\U0001f600".encode() * 250_000  # 1,000,000 bytes, not JSON
    poison = [(b"p1", b"{}"), (b"p2", huge), (b"p3", b'{"user_id": 5}'), (b"p4", b"\x00junk")]
    for key, value in poison:
        producer.produce(EVENTS_INTERACTIONS.name, key=key + unique.encode(), value=value)
    for event in _events(unique, 20):
        produce_event(producer, EVENTS_INTERACTIONS, event)
    flush(producer)

    with WorkerProcess(stack, NAME, group) as worker:
        wait_for(
            lambda: int(store.get(counter_key(group)) or 0) >= 20,
            90,
            "the counter to count the 20 valid events after the poison",
        )
        wait_for(
            lambda: int(store.get(counter_key(group, dead=True)) or 0) >= 4,
            30,
            "the dead counter to count the 4 letters",
        )
        assert worker.alive()
    assert int(store.get(counter_key(group, dead=True))) == 4  # every letter counted once

    raw = read_range(
        stack, DEAD_LETTERS.name, letters_before, end_offsets(stack, DEAD_LETTERS.name)
    )
    assert all(len(v or b"") <= MAX_LETTER_BYTES for _k, v in raw)
    mine = [
        d
        for d in (codecs.decode(DEAD_LETTERS, v) for _k, v in raw)
        if isinstance(d, DeadLetter) and d.processor == NAME and (d.key or "").endswith(unique)
    ]
    assert sorted(d.key for d in mine) == sorted(k.decode() + unique for k, _v in poison)
    big = next(d for d in mine if d.key == f"p2{unique}")
    assert big.source_topic == EVENTS_INTERACTIONS.name
    assert big.partition is not None and big.offset is not None
    assert "value cut to" in big.reason and "1000000 bytes" in big.reason
    assert big.value and huge.decode().startswith(big.value)
    # The coordinates find the original, whole.
    consumer = Consumer({**stack.kafka_config(), "group.id": f"{group}-read"})
    try:
        consumer.assign([TopicPartition(big.source_topic, big.partition, big.offset)])
        msg = consumer.consume(1, timeout=10)[0]
        assert msg.value() == huge
    finally:
        consumer.close()


def test_a_failing_batch_stops_the_worker_uncommitted_and_is_redone(stack, unique):
    group = f"t-fail-{unique}"
    store = redis.Redis.from_url(stack.redis_url)
    start = sum(_commit_end(stack, group).values())
    # A real, persistent Redis failure: the counter's key holds a list (WRONGTYPE).
    store.rpush(counter_key(group), "not a counter")
    producer = bulk_producer(stack)
    for event in _events(unique, 20):
        produce_event(producer, EVENTS_INTERACTIONS, event)
    flush(producer)

    failing = WorkerProcess(stack, NAME, group).start()
    try:
        wait_for(lambda: not failing.alive(), 90, "the worker to stop on its failing batch")
    finally:
        failing.stop()
    assert failing.proc.returncode == metrics.EXIT_STUCK
    assert _committed(stack, group) == start  # the failed batch was not committed
    record = json.loads(
        store.get(f"workers:{NAME}:{failing.proc.pid}") or b"{}"
    )  # its last heartbeat (TTL: a few seconds)
    assert record.get("state") == "stuck" and "WRONGTYPE" in record.get("reason", "")

    store.delete(counter_key(group))  # the store is fixed: the restarted worker redoes it
    with WorkerProcess(stack, NAME, group):
        wait_for(
            lambda: int(store.get(counter_key(group)) or 0) >= 20, 90, "the batch to be redone"
        )
    assert int(store.get(counter_key(group))) == 20
