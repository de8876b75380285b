"""The request-topic server's outcomes: every request ends in a reply or a dead letter.

The broker is replaced by a producer that records what it is given and reports delivery at
once (the integration tests in tests/integration/serving/test_topic_server.py use Kafka)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message

from streamrec.infra.settings import Settings
from streamrec.serving.errors import Overloaded
from streamrec.serving.metrics import ServingMetrics
from streamrec.serving.topic_server import TopicServer
from streamrec.topics import DEAD_LETTERS, RECS_REQUESTS


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes


@dataclass
class RecordingProducer:
    refuse_topics: set[str] = field(default_factory=set)
    produced: list[Produced] = field(default_factory=list)

    def produce(
        self, topic: str, key: bytes | None, value: bytes, on_delivery: Callable[..., None]
    ) -> None:
        self.produced.append(Produced(topic, key, value))
        err = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART) if topic in self.refuse_topics else None
        on_delivery(err, Message(topic=topic, key=key, value=value))

    def to(self, topic: str) -> list[Produced]:
        return [p for p in self.produced if p.topic == topic]


class Answer:
    def __init__(self, correlation_id: str) -> None:
        self.correlation_id = correlation_id

    def response_json(self) -> bytes:
        return json.dumps({"correlation_id": self.correlation_id}).encode()


class Recommender:
    def __init__(self, fail: BaseException | None = None, popular_fails: bool = False) -> None:
        self.fail = fail
        self.popular_fails = popular_fails

    async def recommend(self, query: Any) -> Answer:
        if self.fail is not None:
            raise self.fail
        return Answer(query.request_id)

    def popular_answer(self, query: Any) -> Answer:
        if self.popular_fails:
            raise RuntimeError("trending list broken")
        return Answer(query.request_id)


def server_with(recommender: Recommender | None, **serving: Any) -> TopicServer:
    # Without rate limits (serving.rate_limit is tested with a real Redis)
    settings = Settings().with_overrides(serving=serving, auth={"mode": "off"})
    worker = SimpleNamespace(metrics=ServingMetrics(), recommender=recommender)
    server = TopicServer(settings, worker)  # type: ignore[arg-type]
    server.producer = RecordingProducer()  # type: ignore[assignment]
    return server


def message(value: bytes | dict[str, Any], offset: int = 7) -> Message:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return Message(topic=RECS_REQUESTS.name, partition=2, offset=offset, key=b"u", value=raw)


def handle(server: TopicServer, *messages: Message) -> None:
    """Dispatch on a consumer-like thread, as `_consume` does, and wait for every answer."""

    async def run() -> None:
        server._loop = asyncio.get_running_loop()
        for msg in messages:
            future = await asyncio.to_thread(server._dispatch, msg)
            if future is not None:
                await asyncio.wrap_future(future)

    asyncio.run(run())


def finished(server: TopicServer) -> dict[tuple[str, int], int]:
    return dict(server._to_store)


def letters(server: TopicServer) -> list[dict[str, Any]]:
    producer: RecordingProducer = server.producer  # type: ignore[assignment]
    return [json.loads(p.value) for p in producer.to(DEAD_LETTERS.name)]


def request(**fields: Any) -> dict[str, Any]:
    return {"correlation_id": "c1", "user_id": "7", **fields}


def test_a_request_is_answered_on_its_reply_topic_and_its_offset_finished():
    server = server_with(Recommender())
    handle(server, message(request(reply_to="recs.responses.mine")))
    replies = server.producer.to("recs.responses.mine")  # type: ignore[attr-defined]
    assert [json.loads(r.value)["correlation_id"] for r in replies] == ["c1"]
    assert replies[0].key == b"c1"
    assert letters(server) == []
    assert finished(server) == {(RECS_REQUESTS.name, 2): 8}


def test_a_request_without_a_time_zone_is_answered():
    server = server_with(Recommender())
    handle(server, message(request(sent_at="2026-12-01T19:33:00")))
    assert len(server.producer.to("recs.responses")) == 1  # type: ignore[attr-defined]
    assert finished(server) == {(RECS_REQUESTS.name, 2): 8}


@pytest.mark.parametrize("reply_to", ["catalog.items", "dead.letters", "nobody.listens", "recs"])
def test_a_reply_topic_outside_the_allow_list_is_dead_lettered(reply_to):
    server = server_with(Recommender())
    handle(server, message(request(reply_to=reply_to)))
    producer: RecordingProducer = server.producer  # type: ignore[assignment]
    assert [p.topic for p in producer.produced] == [DEAD_LETTERS.name]
    (letter,) = letters(server)
    assert reply_to in letter["reason"] and "cannot be replied to" in letter["reason"]
    assert (letter["partition"], letter["offset"]) == (2, 7)
    assert finished(server) == {(RECS_REQUESTS.name, 2): 8}


def test_the_allow_list_comes_from_the_settings():
    server = server_with(Recommender(), reply_topics="team-a.*, other.*")
    handle(server, message(request(reply_to="team-a.replies")), message(request(), offset=8))
    assert len(server.producer.to("team-a.replies")) == 1  # type: ignore[attr-defined]
    (letter,) = letters(server)
    assert "recs.responses" in letter["reason"] and letter["offset"] == 8


@pytest.mark.parametrize(
    "recommender",
    [
        Recommender(fail=RuntimeError("a bug in ranking")),
        Recommender(fail=Overloaded("full", 1), popular_fails=True),
        None,  # the worker is not started
    ],
    ids=["recommend-raises", "shed-answer-raises", "no-recommender"],
)
def test_a_failure_while_answering_is_dead_lettered_with_the_reason(recommender, caplog):
    server = server_with(recommender)
    with caplog.at_level("ERROR", logger="streamrec.serving.topic_server"):
        handle(server, message(request()))
    (letter,) = letters(server)
    assert "c1" in letter["reason"] or "failed" in letter["reason"]
    assert server.producer.to("recs.responses") == []  # type: ignore[attr-defined]
    assert finished(server) == {(RECS_REQUESTS.name, 2): 8}
    assert any(r.exc_info for r in caplog.records), "the failure is logged with its traceback"


def test_a_reply_the_broker_refuses_is_dead_lettered():
    server = server_with(Recommender())
    server.producer.refuse_topics.add("recs.responses.gone")  # type: ignore[attr-defined]
    handle(server, message(request(reply_to="recs.responses.gone")))
    (letter,) = letters(server)
    assert "recs.responses.gone" in letter["reason"] and "not delivered" in letter["reason"]
    assert finished(server) == {(RECS_REQUESTS.name, 2): 8}


@pytest.mark.parametrize(
    "value",
    [b"not json", b'{"correlation_id": "c", "user_id": "a b"}', b'{"k": NaN}', b""],
)
def test_malformed_requests_are_dead_lettered(value):
    server = server_with(Recommender())
    handle(server, message(value))
    assert len(letters(server)) == 1
    assert finished(server) == {(RECS_REQUESTS.name, 2): 8}
