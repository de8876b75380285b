"""`produce_many`: one `produce_batch` call, a retry for what a full queue refused, and any
other refusal raised."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from streamrec.streams.errors import DeliveryError
from streamrec.streams.producer import produce_many


class FakeProducer:
    """Queues at most `room` messages per call; marks the rest as librdkafka does."""

    def __init__(self, room: int, code: int = KafkaError._QUEUE_FULL) -> None:
        self.room, self.code = room, code
        self.calls: list[tuple[str, list[bytes], dict[str, Any]]] = []
        self.polls = 0

    def produce_batch(self, topic: str, messages: list[dict[str, Any]], **kwargs: Any) -> int:
        self.calls.append((topic, [m["key"] for m in messages[: self.room]], kwargs))
        for m in messages[self.room :]:
            m["_error"] = KafkaError(self.code)
        return min(self.room, len(messages))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0


def _messages(n: int) -> list[dict[str, Any]]:
    return [{"key": b"k%d" % i, "value": b"v"} for i in range(n)]


def test_one_call_when_there_is_room_and_the_partition_is_named():
    p = FakeProducer(room=10)
    produce_many(p, "t", _messages(5), partition=3)  # type: ignore[arg-type]
    assert p.calls == [("t", [b"k0", b"k1", b"k2", b"k3", b"k4"], {"partition": 3})]


def test_what_a_full_queue_refused_is_produced_again_in_order():
    p = FakeProducer(room=2)
    produce_many(p, "t", _messages(5))  # type: ignore[arg-type]
    assert [keys for _t, keys, _kw in p.calls] == [[b"k0", b"k1"], [b"k2", b"k3"], [b"k4"]]
    assert p.polls == 2


def test_another_refusal_raises():
    p = FakeProducer(room=1, code=KafkaError.MSG_SIZE_TOO_LARGE)
    with pytest.raises(DeliveryError):
        produce_many(p, "t", _messages(2))  # type: ignore[arg-type]
