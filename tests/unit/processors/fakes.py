"""In-memory doubles for the ports processors are built over (no broker, no Redis)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from streamrec.streams import codecs
from streamrec.streams.decoding import AgentDecoder
from streamrec.streams.table_reader import ReadProgress
from streamrec.topics import DeadLetter, TopicSpec
from streamrec.topics.base import Event


@dataclass
class FakeMessage:
    topic: str
    partition: int
    offset: int


@dataclass
class FakeEvent:
    """What a faust stream yields: the value and key bytes plus the message they came in."""

    value: bytes | None
    message: FakeMessage
    key: bytes | None = None
    acks: int = 0  # how many times the processor released it (faust's `event.ack()`)

    def ack(self) -> bool:
        self.acks += 1
        return True


class Offsets:
    """Makes events of one topic with increasing offsets per partition."""

    def __init__(self, spec: TopicSpec) -> None:
        self.spec = spec
        self.next: dict[int, int] = {}

    def raw(self, value: bytes | None, partition: int = 0, key: bytes | None = None) -> FakeEvent:
        offset = self.next.get(partition, 0)
        self.next[partition] = offset + 1
        return FakeEvent(value, FakeMessage(self.spec.name, partition, offset), key)

    def event(self, event: Event, partition: int = 0) -> FakeEvent:
        return self.raw(codecs.encode(self.spec, event), partition, self.spec.key_of(event))

    def kafka(self, value: bytes | None, key: bytes | None = None, partition: int = 0) -> Message:
        """A confluent-kafka `Message`, what a plain consumer thread polls."""
        offset = self.next.get(partition, 0)
        self.next[partition] = offset + 1
        return Message(
            topic=self.spec.name, partition=partition, offset=offset, key=key, value=value
        )


class ScriptedReader:
    """A `streams.table_reader.TopicReader` double: the backlog it is made with sets its
    bounds (as the end offsets taken at start), `follow` adds later messages, and `poll`
    hands them out in order, tracking progress with the real `ReadProgress`. `per_poll`
    caps a poll's messages (librdkafka hands out only what it has fetched so far)."""

    def __init__(
        self,
        backlog: Iterable[Message] = (),
        *,
        per_poll: int | None = None,
        fail: Exception | None = None,
    ) -> None:
        self.queue: list[Message] = list(backlog)
        self.per_poll = per_poll
        ends: dict[int, int] = {}
        for msg in self.queue:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)
        self.progress = ReadProgress(ends)
        self.fail = fail  # raised by the next poll (a broker failure)
        self.polls = 0
        self.closed = False

    @property
    def bounds(self) -> dict[int, int]:
        return self.progress.bounds

    @property
    def caught_up(self) -> bool:
        return self.progress.done

    def follow(self, *messages: Message) -> None:
        self.queue.extend(messages)

    def poll(self, max_messages: int = 1000, timeout_s: float = 0.5) -> list[Message]:
        self.polls += 1
        if self.fail is not None:
            raise self.fail
        n = min(max_messages, self.per_poll or max_messages)
        got, self.queue = self.queue[:n], self.queue[n:]
        for msg in got:
            self.progress.saw(msg.partition(), msg.offset())
        return got

    def close(self) -> None:
        self.closed = True


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Letters:
    """A dead-letter sink that keeps what it was sent (usable sync and async)."""

    got: list[DeadLetter] = field(default_factory=list)

    def send(self, letter: DeadLetter) -> None:
        self.got.append(letter)

    @property
    def reasons(self) -> list[str]:
        return [letter.reason for letter in self.got]


class AsyncLetters(Letters):
    async def send(self, letter: DeadLetter) -> None:  # type: ignore[override]
        self.got.append(letter)


@dataclass
class Tally:
    """A counter double (the prometheus child's `inc`)."""

    value: float = 0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


def agent_decoder(
    spec: TopicSpec, processor: str = "test"
) -> tuple[AgentDecoder[Any], AsyncLetters]:
    letters = AsyncLetters()
    return AgentDecoder(spec, processor, letters, failed=Tally()), letters
