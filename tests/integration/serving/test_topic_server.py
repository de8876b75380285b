"""The request topic: a plain confluent-kafka client asks and gets its answer; poison
messages go to dead.letters and serving carries on."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.infra.settings import Settings
from streamrec.streams import codecs
from streamrec.topics import DEAD_LETTERS, RECS_REQUESTS, DeadLetter, RecRequest, RecResponse
from tests.integration.serving.conftest import USERS_WITH_FEATURES, serve
from tests.kafka_helpers import end_offsets, read_range, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(serving_stack: Settings):
    with serve(
        serving_stack, topic=True, consumer_group=f"serving-{uuid.uuid4().hex[:6]}"
    ) as server:
        yield server


@pytest.fixture
def reply_topic(server) -> str:
    name = f"recs.responses.test.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": server.settings.kafka_bootstrap})
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
    return name


class Client:
    """A plain Kafka client of the request topic: produce requests, read replies."""

    def __init__(self, settings: Settings, reply_to: str) -> None:
        self.reply_to = reply_to
        self.producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 0})
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"client-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
            }
        )
        self.consumer.subscribe([reply_to])
        self.replies: dict[str, RecResponse] = {}

    def ask(self, correlation_id: str, user_id: str, **fields) -> None:
        req = RecRequest(
            correlation_id=correlation_id, user_id=user_id, reply_to=self.reply_to, **fields
        )
        self.producer.produce(
            RECS_REQUESTS.name, key=user_id.encode(), value=codecs.encode(RECS_REQUESTS, req)
        )
        self.producer.flush(10)

    def ask_partition(self, correlation_id: str, user_id: str, partition: int) -> None:
        req = RecRequest(correlation_id=correlation_id, user_id=user_id, reply_to=self.reply_to)
        self.producer.produce(
            RECS_REQUESTS.name,
            key=user_id.encode(),
            value=codecs.encode(RECS_REQUESTS, req),
            partition=partition,
        )
        self.producer.flush(10)

    def raw(self, value: bytes) -> None:
        self.producer.produce(RECS_REQUESTS.name, key=b"poison", value=value)
        self.producer.flush(10)

    def poll(self) -> None:
        for msg in self.consumer.consume(100, timeout=0.2):
            if not msg.error():
                resp = codecs.decode_json(RecResponse, msg.value())
                self.replies[resp.correlation_id] = resp

    def reply(self, correlation_id: str, timeout_s: float = 30) -> RecResponse:
        def got():
            self.poll()
            return self.replies.get(correlation_id)

        return wait_for(got, timeout_s, f"the reply to {correlation_id}")

    def close(self) -> None:
        self.consumer.close()


def _warm_up(client: Client) -> None:
    """The server joins its consumer group at 'latest': ask until one answer comes back."""
    n = 0

    def answered():
        nonlocal n
        n += 1
        client.ask(f"warm-{n}", "1")
        client.poll()
        return any(c.startswith("warm-") for c in client.replies)

    wait_for(answered, 60, "the topic server to answer", interval=0.5)


def test_a_plain_kafka_client_gets_its_answer_with_its_correlation_id(server, reply_topic):
    client = Client(server.settings, reply_topic)
    try:
        _warm_up(client)
        cid = f"c-{uuid.uuid4().hex}"
        client.ask(cid, USERS_WITH_FEATURES[3], k=7)
        reply = client.reply(cid)
        assert reply.correlation_id == cid and reply.user_id == USERS_WITH_FEATURES[3]
        assert reply.level == "FULL" and reply.model_version and len(reply.items) == 7
        cold = f"c-{uuid.uuid4().hex}"
        client.ask(cold, "brand-new-user", k=4, recent_item_ids=["50", "181"])
        reply = client.reply(cold)
        assert reply.level == "POPULAR" and len(reply.items) == 4
        assert {"50", "181"}.isdisjoint(i.item_id for i in reply.items)
    finally:
        client.close()


def test_malformed_requests_go_to_dead_letters_and_serving_continues(server, reply_topic):
    client = Client(server.settings, reply_topic)
    try:
        _warm_up(client)
        before = end_offsets(server.settings, DEAD_LETTERS.name)
        client.raw(b"{not json")
        client.raw(b'{"correlation_id": "x", "user_id": "1", "k": 0}')
        after = wait_for(
            lambda: (
                (a := end_offsets(server.settings, DEAD_LETTERS.name))
                and sum(a.values()) >= sum(before.values()) + 2
                and a
            ),
            30,
            "two dead letters",
        )
        letters = [
            codecs.decode_json(DeadLetter, v)
            for _, v in read_range(server.settings, DEAD_LETTERS.name, before, after)
        ]
        ours = [d for d in letters if d.processor == "serving"]
        assert len(ours) == 2
        assert ours[0].value == "{not json" and "json" in ours[0].reason.lower()
        assert ours[1].reason.startswith("k: ") and ours[1].source_topic == RECS_REQUESTS.name
        cid = f"after-{uuid.uuid4().hex}"
        client.ask(cid, "2")
        assert client.reply(cid).correlation_id == cid
    finally:
        client.close()


def test_the_projects_topic_client_gets_an_answer_with_its_round_trip(server):
    from streamrec.serving.topic_client import RequestTopicClient

    client = RequestTopicClient(server.settings, "t-client")
    try:
        resp, rtt_ms = client.ask_until_answered(USERS_WITH_FEATURES[0], 60, k=7)
        again = client.ask(USERS_WITH_FEATURES[0], 30, k=7)
    finally:
        client.close()
    assert resp.user_id == USERS_WITH_FEATURES[0] and len(resp.items) == 7
    assert resp.correlation_id.startswith(client.reply_to) and rtt_ms > 0
    assert again is not None and again[0].correlation_id != resp.correlation_id


def test_requests_that_cannot_be_replied_to_are_dead_lettered_and_write_nowhere(
    server, reply_topic
):
    """A reply_to outside serving.reply_topics, or an allowed name with no topic, and a user id
    the HTTP route refuses: each is a dead letter with its reason; the broker creates no topic
    and the catalog gets nothing. A request whose sent_at has no zone is answered."""
    settings = server.settings
    client = Client(settings, reply_topic)
    try:
        _warm_up(client)
        catalog_before = end_offsets(settings, "catalog.items")
        before = end_offsets(settings, DEAD_LETTERS.name)
        unmade = f"recs.responses.unmade.{uuid.uuid4().hex[:8]}"
        for cid, fields in [
            ("to-catalog", {"reply_to": "catalog.items"}),
            ("to-unknown", {"reply_to": f"nobody.{uuid.uuid4().hex[:8]}"}),
            ("to-unmade", {"reply_to": unmade}),
            ("bad-user", {"user_id": "用户/../x"}),
        ]:
            value = {"correlation_id": cid, "user_id": "1", **fields}
            client.raw(json.dumps(value).encode())
        naive = f"naive-{uuid.uuid4().hex}"
        value = {"correlation_id": naive, "user_id": "3", "reply_to": reply_topic}
        client.raw(json.dumps({**value, "sent_at": "2026-12-01T19:33:00"}).encode())
        assert client.reply(naive).correlation_id == naive

        def ours() -> list[DeadLetter]:
            after = end_offsets(settings, DEAD_LETTERS.name)
            letters = [
                codecs.decode_json(DeadLetter, v)
                for _, v in read_range(settings, DEAD_LETTERS.name, before, after)
            ]
            return [d for d in letters if d.processor == "serving"]

        letters = wait_for(lambda: len(ours()) >= 4 and ours(), 60, "four dead letters")
        reasons = {json.loads(d.value)["correlation_id"]: d.reason for d in letters}
        assert "cannot be replied to" in reasons["to-catalog"]
        assert "cannot be replied to" in reasons["to-unknown"]
        assert unmade in reasons["to-unmade"] and "not delivered" in reasons["to-unmade"]
        assert reasons["bad-user"].startswith("user_id")
        assert end_offsets(settings, "catalog.items") == catalog_before
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
        topics = admin.list_topics(timeout=10).topics
        assert unmade not in topics and not any(t.startswith("nobody.") for t in topics)
    finally:
        client.close()
