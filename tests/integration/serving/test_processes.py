"""N serving processes on one host (`serving.workers` = 2): each binds the port with
SO_REUSEPORT and joins the request topic's group. Both answer, both register a heartbeat with
their own metrics, both publish impressions, and a process killed while requests are in flight
on the request topic loses none of them: their offsets were not committed, so the group's next
owner of the partition answers them."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.infra.processes import free_port
from streamrec.infra.settings import Settings
from streamrec.serving.process import ServeProcess
from streamrec.streams import codecs
from streamrec.streams.metrics import live_workers
from streamrec.topics import RECS_REQUESTS, RECS_SERVED, Impression
from tests.integration.serving.conftest import USERS_WITH_FEATURES
from tests.integration.serving.test_topic_server import Client
from tests.integration.serving.test_workers import workers_of
from tests.kafka_helpers import end_offsets, read_range, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def answered_by(metrics_url: str) -> float:
    """Answers this process counted on its own metrics endpoint (`streamrec_degradation`,
    every level), the one its heartbeat names for the dashboard."""
    text = httpx.get(metrics_url, timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("streamrec_degradation_total{")
    )


def committed(settings: Settings, group: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(RECS_REQUESTS.name, p) for p in range(RECS_REQUESTS.partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()


def group_settled(settings: Settings, group: str, members: int) -> bool:
    """The group is stable with `members` members and every request partition assigned."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    held = [
        tp.partition
        for m in desc.members
        for tp in (m.assignment.topic_partitions if m.assignment else [])
        if tp.topic == RECS_REQUESTS.name
    ]
    return (
        getattr(desc.state, "name", "") == "STABLE"
        and len(desc.members) == members
        and sorted(held) == list(range(RECS_REQUESTS.partitions))
    )


def test_two_processes_answer_and_a_killed_one_loses_no_request(serving_stack: Settings):
    group = f"serving-{uuid.uuid4().hex[:6]}"
    settings = serving_stack.with_overrides(
        serving={
            "workers": 2,
            "port": free_port(),
            "request_budget_ms": 5000,
            "dependency_cap_ms": 2000,
            "consumer_group": group,
        },
        analytics={"metrics_port": 0},
    )
    reply_to = f"recs.responses.test.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    admin.create_topics([NewTopic(reply_to, 1, 1)])[reply_to].result(30)
    served_before = end_offsets(settings, RECS_SERVED.name)
    server = ServeProcess(settings).start()
    client = Client(settings, reply_to)
    try:
        wait_for(lambda: len(workers_of(server.proc.pid)) == 2, 120, "two serving processes")

        def beats() -> dict[int, str]:
            pids = workers_of(server.proc.pid)
            return {
                b.pid: b.metrics_url
                for b in live_workers(settings)
                if b.name == "serving" and b.pid in pids
            }

        wait_for(lambda: len(beats()) == 2, 120, "a heartbeat from each process")

        # HTTP: each request on a connection of its own, which the kernel hashes to one of
        # the two listening sockets.
        http_ids: list[str] = []
        for i in range(80):
            user = USERS_WITH_FEATURES[i % len(USERS_WITH_FEATURES)]
            rid = f"http-{uuid.uuid4().hex[:12]}"
            r = httpx.get(
                f"{server.url}/v1/users/{user}/recommendations",
                headers={"x-request-id": rid},
                timeout=30,
            )
            assert r.status_code == 200
            http_ids.append(rid)
        counts = {pid: answered_by(url) for pid, url in beats().items()}
        assert len(counts) == 2 and all(n > 0 for n in counts.values()), counts

        # The request topic: every partition answered once, so each has a committed offset
        # its next owner starts from. Asked once the group has settled (a request answered
        # after its partition was revoked has its offset stored by no one), and asked again
        # on a partition whose offset a rebalance still dropped.
        wait_for(lambda: group_settled(settings, group, 2), 120, "the group to settle")
        deadline = time.monotonic() + 120
        while missing := [p for p, o in committed(settings, group).items() if o < 0]:
            assert time.monotonic() < deadline, f"no committed offset on partitions {missing}"
            asked = [f"warm-{p}-{uuid.uuid4().hex[:6]}" for p in missing]
            for cid, p in zip(asked, missing, strict=True):
                client.ask_partition(cid, USERS_WITH_FEATURES[p], p)
            for cid in asked:
                client.reply(cid, 120)
            # Stored offsets are committed every auto.commit.interval.ms (5 s).
            settle = time.monotonic() + 15
            while time.monotonic() < settle and any(
                committed(settings, group)[p] < 0 for p in missing
            ):
                time.sleep(0.2)  # polling a real condition with a deadline

        # Requests keep coming while one process is killed mid-stream.
        ids = [f"req-{i}" for i in range(300)]
        sent = threading.Event()

        def produce() -> None:
            # 100 a second for 3 s, so the kill lands while requests keep arriving.
            t0 = time.monotonic()
            for i, cid in enumerate(ids):
                ahead = t0 + i / 100 - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing the client, not waiting on a race
                client.ask(cid, USERS_WITH_FEATURES[i % len(USERS_WITH_FEATURES)], budget_ms=5000)
            sent.set()

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()

        def some_answered() -> bool:
            client.poll()
            return sum(cid in client.replies for cid in ids) >= 30

        wait_for(some_answered, 60, "the first answers")
        victim = sorted(workers_of(server.proc.pid))[0]
        os.kill(victim, signal.SIGKILL)
        assert not sent.is_set(), "every request was sent before the kill: nothing was tested"
        producer.join(120)
        assert sent.is_set()

        def all_answered() -> bool:
            client.poll()
            return all(cid in client.replies for cid in ids)

        wait_for(all_answered, 180, "an answer to every request on the topic")
        missing = [cid for cid in ids if cid not in client.replies]
        assert not missing

        # Both processes published impressions: every HTTP answer has one on recs.served.
        def impressions() -> set[str]:
            rows = read_range(
                settings, RECS_SERVED.name, served_before, end_offsets(settings, RECS_SERVED.name)
            )
            return {codecs.decode_json(Impression, value).request_id for _, value in rows}

        wait_for(lambda: set(http_ids) <= impressions(), 60, "the HTTP answers' impressions")
    finally:
        client.close()
        server.stop()
    assert not workers_of(server.proc.pid)
