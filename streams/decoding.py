"""Decode, or dead-letter with the reason and count it: the one step every consumer runs.

Messages travel as raw bytes (streams.app) and are decoded against their topic's contract
here. A message that does not decode becomes a `DeadLetter` carrying the reason and the
message's topic, partition, offset, key and value; it goes to the consumer's sink, is counted
(`streamrec_events_failed_total{reason="schema"}` unless another counter is given), and the
consumer gets None and goes on.

- `Decoder`: for a plain confluent-kafka consumer on a thread (sync sink,
  `dead_letters.ProducerDeadLetters`);
- `AgentDecoder`: for a Faust agent (async sink, `dead_letters.FaustDeadLetters`).

Both take a confluent-kafka `Message`, a faust event, or a `Received` (what unit tests and
other in-memory callers build). The coordinates are read only when a message fails, so the
decode path costs one call per message more than `codecs.decode`. `reject(message, reason)`
dead-letters a message for a reason found after decoding (a processor's own checks).

Usage (a Faust agent)::

    decode = AgentDecoder(EVENTS_INTERACTIONS, NAME, FaustDeadLetters(app))
    for event in batch:
        interaction = await decode(event)
        if interaction is None:
            continue   # dead-lettered and counted
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from confluent_kafka import Message as KafkaMessage

from streamrec.streams import codecs, metrics
from streamrec.streams.dead_letters import AsyncDeadLetterSink, DeadLetterSink, dead_letter
from streamrec.topics import DeadLetter, TopicSpec
from streamrec.topics.base import Event
from streamrec.topics.errors import SchemaError

E = TypeVar("E", bound=Event)


class Count(Protocol):
    """What the step counts failures with (a prometheus counter child, or a test's)."""

    def inc(self, amount: float = 1) -> None: ...


@dataclass(frozen=True, slots=True)
class Received:
    """A message's bytes and coordinates, whichever client read it."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
    offset: int | None = None


def received(message: Any) -> Received:
    """The coordinates of a confluent-kafka `Message`, a faust event or a `Received`."""
    if isinstance(message, Received):
        return message
    if isinstance(message, KafkaMessage):
        return Received(
            topic=message.topic() or "",
            value=message.value(),
            key=message.key(),
            partition=message.partition(),
            offset=message.offset(),
        )
    msg = message.message  # a faust EventT: its value plus the Message it came in
    return Received(
        topic=msg.topic,
        value=message.value,
        key=message.key,
        partition=msg.partition,
        offset=msg.offset,
    )


def value_of(message: Any) -> bytes | None:
    if isinstance(message, KafkaMessage):
        return message.value()
    return cast(bytes | None, message.value)  # faust events and `Received`


class _Step(Generic[E]):
    def __init__(
        self,
        spec: TopicSpec,
        processor: str,
        *,
        decode: Callable[[bytes | None], E] | None = None,
        failed: Count | None = None,
    ) -> None:
        self.spec = spec
        self.processor = processor
        self._decode: Callable[[bytes | None], E] = decode or (
            lambda value: cast(E, codecs.decode(spec, value))
        )
        if failed is None:
            failed = metrics.EVENTS_FAILED.labels(processor, spec.name, "schema")
        self._failed: Count = failed
        self.dead = 0  # dead-lettered by this step since it was made

    def _letter(self, message: Any, reason: str) -> DeadLetter:
        r = received(message)
        self.dead += 1
        self._failed.inc()
        return dead_letter(
            source_topic=r.topic or self.spec.name,
            processor=self.processor,
            reason=reason,
            value=r.value,
            key=r.key,
            partition=r.partition,
            offset=r.offset,
        )


class Decoder(_Step[E]):
    """Decode-or-dead-letter for a consumer thread; the sink is synchronous."""

    def __init__(
        self,
        spec: TopicSpec,
        processor: str,
        sink: DeadLetterSink,
        *,
        decode: Callable[[bytes | None], E] | None = None,
        failed: Count | None = None,
    ) -> None:
        super().__init__(spec, processor, decode=decode, failed=failed)
        self.sink = sink

    def __call__(self, message: Any) -> E | None:
        try:
            return self._decode(value_of(message))
        except SchemaError as exc:
            self.reject(message, exc.reason)
            return None

    def reject(self, message: Any, reason: str) -> None:
        self.sink.send(self._letter(message, reason))


class AgentDecoder(_Step[E]):
    """Decode-or-dead-letter for a Faust agent; the sink is asynchronous."""

    def __init__(
        self,
        spec: TopicSpec,
        processor: str,
        sink: AsyncDeadLetterSink,
        *,
        decode: Callable[[bytes | None], E] | None = None,
        failed: Count | None = None,
    ) -> None:
        super().__init__(spec, processor, decode=decode, failed=failed)
        self.sink = sink

    async def __call__(self, message: Any) -> E | None:
        try:
            return self._decode(value_of(message))
        except SchemaError as exc:
            await self.reject(message, exc.reason)
            return None

    async def reject(self, message: Any, reason: str) -> None:
        await self.sink.send(self._letter(message, reason))

    async def decode_all(self, messages: Any) -> list[tuple[Any, E]]:
        """(message, event) of each message that decodes; the others are dead-lettered."""
        out: list[tuple[Any, E]] = []
        for message in messages:
            event = await self(message)
            if event is not None:
                out.append((message, event))
        return out
