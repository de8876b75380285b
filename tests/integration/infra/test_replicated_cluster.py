"""A 3-node KRaft cluster of the test's own: topics get the replication their spec asks for,
`topics apply` raises topics made before the cluster grew, and a broker killed mid-stream, or
cut off the network while it goes on running, loses and duplicates nothing."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial

import pytest
from confluent_kafka import KafkaError, Message
from confluent_kafka.admin import AdminClient

from streamrec.infra import netns
from streamrec.infra.processes import free_port
from streamrec.infra.settings import Settings
from streamrec.infra.stack import StackManager
from streamrec.streams.admin import TopicManager
from streamrec.streams.producer import bulk_producer, flush, produce_event
from streamrec.topics import ALL_TOPICS, EVENTS_INTERACTIONS, Interaction, TopicSpec
from tests.kafka_helpers import end_offsets, read_range

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE_PER_S = 2_000  # a replay's steady trickle, so that a stall shows as latency
KILL_AFTER_S = 3.0
AFTER_REJOIN_S = 2.0
SCENARIO_LIMIT_S = 150.0


def _cluster(stack_factory, **stack: object) -> tuple[Settings, StackManager]:
    settings, manager = stack_factory(
        stack={
            "kafka_brokers": 3,
            "kafka_extra_ports": [free_port(), free_port()],
            "kafka_extra_controller_ports": [free_port(), free_port()],
            **stack,
        }
    )
    started = manager.up()
    assert started == {"redis": True, "kafka-1": True, "kafka-2": True, "kafka-3": True}
    return settings, manager


def _partitions(settings: Settings, topic: str) -> dict:
    admin = AdminClient(settings.kafka_config())
    return admin.list_topics(topic, timeout=10).topics[topic].partitions


def test_topics_get_three_copies_and_apply_raises_a_topic_made_at_one(stack_factory, unique):
    settings, manager = _cluster(stack_factory)
    assert [p.name for p in manager.status()][:3] == ["kafka-1", "kafka-2", "kafka-3"]
    assert all(p.answers for p in manager.status() if p.name.startswith("kafka"))

    topics = TopicManager(settings)
    assert topics.apply().replication_factor == 3
    listed = {t.name: t for t in topics.list()}
    for spec in ALL_TOPICS:
        assert listed[spec.name].replicas == 3, spec.name
        assert listed[spec.name].min_insync_replicas == ("2" if spec.durable else "1"), spec.name
    assert EVENTS_INTERACTIONS.durable and not all(s.durable for s in ALL_TOPICS)

    # A topic created while the cluster counted as one broker, with data in it.
    spec = TopicSpec(
        name=f"t.grown.{unique}",
        schema=Interaction,
        key_field="user_id",
        description="made at one copy",
        partitions=3,
    )
    single = settings.with_overrides(kafka={"replication_factor": 1})
    assert TopicManager(single, (spec,)).apply().created == [spec.name]
    assert {len(p.replicas) for p in _partitions(settings, spec.name).values()} == {1}
    producer = bulk_producer(settings)
    events = [_event(unique, i) for i in range(300)]
    for event in events:
        produce_event(producer, spec, event)
    flush(producer)

    grown = TopicManager(settings, (spec,)).apply()
    assert grown.altered == [spec.name]
    parts = _partitions(settings, spec.name)
    assert all(len(p.replicas) == 3 and len(p.isrs) == 3 for p in parts.values()), parts
    configs = TopicManager(settings, (spec,)).describe_configs([spec])[spec.name]
    assert configs["min.insync.replicas"] == "2"
    assert TopicManager(settings, (spec,)).apply().unchanged == [spec.name]
    read = read_range(settings, spec.name, {}, end_offsets(settings, spec.name))
    assert sorted(json.loads(v)["event_id"] for _k, v in read) == sorted(e.event_id for e in events)


def _event(unique: str, i: int) -> Interaction:
    return Interaction(
        event_id=f"{unique}:{i}",
        user_id=f"u{i % 997}",
        item_id=str(i % 1682),
        kind="view",
        ts=datetime.now(UTC),
        source="fault-test",
    )


def _in_every_isr(settings: Settings, node_id: int, topic: str) -> float:
    """Wait until the node is back in every partition's ISR; when that was."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        parts = _partitions(settings, topic)
        if all(node_id in p.isrs for p in parts.values()):
            return time.monotonic()
        time.sleep(0.2)  # polling the ISR, bounded by the deadline
    raise AssertionError(f"node {node_id} not back in the ISR of {topic} within 60 s")


def _stream_through(
    settings: Settings,
    unique: str,
    fault: Callable[[int], object],
    restore: Callable[[int], object],
    label: str,
) -> dict:
    """Produce a steady stream (idempotent, acks=all) while the leader of partition 0 is
    hit by `fault`; once writes go on without it, `restore` it while the stream goes on.
    Asserts nothing is lost or duplicated in the log; returns the figures."""
    topic = EVENTS_INTERACTIONS.name
    victim = _partitions(settings, topic)[0].leader
    producer = bulk_producer(settings)  # idempotent, acks=all: what the replay uses
    sent_at: dict[str, float] = {}
    acked_at: dict[str, float] = {}
    errors: list[KafkaError] = []
    newest_acked = [0.0]  # when the newest acknowledged message was sent

    def on_delivery(event_id: str, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            acked_at[event_id] = time.monotonic()
            newest_acked[0] = max(newest_acked[0], sent_at[event_id])

    def back() -> float:
        restore(victim)
        return _in_every_isr(settings, victim, topic)

    hit_at = rejoined_at = None
    rejoin: Future[float] | None = None
    pool = ThreadPoolExecutor(1)
    t0 = time.monotonic()
    i = 0
    try:
        while True:
            now = time.monotonic()
            assert now - t0 < SCENARIO_LIMIT_S, "the scenario did not finish"
            for _ in range(int((now - t0) * RATE_PER_S) - i):
                event = _event(unique, i)
                sent_at[event.event_id] = time.monotonic()
                produce_event(
                    producer, EVENTS_INTERACTIONS, event, partial(on_delivery, event.event_id)
                )
                i += 1
            producer.poll(0.005)
            if hit_at is None and now - t0 >= KILL_AFTER_S:
                fault(victim)
                hit_at = time.monotonic()
            elif hit_at is not None and rejoin is None and newest_acked[0] > hit_at + 0.5:
                # Writes go on without it: now bring it back, while the stream goes on.
                rejoin = pool.submit(back)
            elif rejoin is not None and rejoined_at is None and rejoin.done():
                rejoined_at = rejoin.result()
            elif rejoined_at is not None and now - rejoined_at >= AFTER_REJOIN_S:
                break
        flush(producer, 60)
    finally:
        pool.shutdown(wait=True)

    produced = set(sent_at)
    assert not errors, errors[:3]
    assert set(acked_at) == produced
    ends = end_offsets(settings, topic)
    read = [json.loads(v)["event_id"] for _k, v in read_range(settings, topic, {}, ends)]
    counts = Counter(read)
    assert hit_at is not None and rejoined_at is not None
    latency = {e: acked_at[e] - sent_at[e] for e in produced}
    before = sorted(v for e, v in latency.items() if sent_at[e] < hit_at)
    during = [v for e, v in latency.items() if sent_at[e] >= hit_at]
    figures = {
        "produced": len(produced),
        "lost": len(produced - counts.keys()),
        "duplicated": sum(c - 1 for c in counts.values()),
        "node": victim,
        "ack_p50_before_ms": round(1000 * before[len(before) // 2], 1),
        "produce_stall_s": round(max(during), 2),
        "hit_to_rejoined_s": round(rejoined_at - hit_at, 1),
    }
    print(f"{label}:", json.dumps(figures))
    assert (figures["lost"], figures["duplicated"]) == (0, 0)
    assert sum(ends.values()) == len(produced)  # nothing written twice into the log either
    return figures


def test_a_broker_killed_mid_stream_loses_and_duplicates_nothing(stack_factory, unique):
    settings, manager = _cluster(stack_factory)
    TopicManager(settings).apply()

    def kill(node: int) -> None:
        assert manager.kafka_nodes[node - 1].kill()

    def restart(node: int) -> None:
        manager.kafka_nodes[node - 1].start()

    _stream_through(settings, unique, kill, restart, label="broker-kill")


def _can_make_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


@pytest.mark.skipif(not _can_make_namespaces(), reason="network namespaces need root and `ip`")
def test_a_broker_cut_off_the_network_mid_stream_loses_and_duplicates_nothing(
    stack_factory, unique
):
    settings, manager = _cluster(
        stack_factory, kafka_netns=True, kafka_netns_subnet=f"10.232.{os.getpid() % 250}.0/24"
    )
    TopicManager(settings).apply()

    def cut(node: int) -> None:
        netns.cut(settings, node)
        assert netns.is_cut(settings, node)

    def heal(node: int) -> None:
        assert manager.kafka_nodes[node - 1].pid() is not None  # it was cut off, not dead
        netns.heal(settings, node)

    figures = _stream_through(settings, unique, cut, heal, label="broker-partition")
    # It rejoined every ISR as the same process: nothing restarted it.
    pid = manager.kafka_nodes[figures["node"] - 1].pid()
    assert pid is not None and not netns.is_cut(settings, figures["node"])
    manager.down()
    assert netns.remove(settings) == []  # `down` removed the namespaces and the bridge
