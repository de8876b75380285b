"""Routing poison messages to dead.letters, with the reason, so a worker never stops on one.

Each processor states its failure policy in its docstring; for malformed input it is always
"dead-letter and carry on": the original bytes are kept (utf-8, or base64 when not text), cut
to `MAX_VALUE_CHARS` so that the copy of an oversized message is not refused by the broker
the way the original may have been (`message.max.bytes`); the coordinates (topic, partition,
offset) always survive, so the full message can be read back from its topic.

Sinks (where a consumer's letters go; `streams.decoding` builds the letters and counts them):
- `FaustDeadLetters`: from inside a Faust agent, through the app's producer (async);
- `ProducerDeadLetters`: from a plain confluent-kafka consumer thread, through a librdkafka
  producer (sync), optionally tracking deliveries so a batch can wait for its letters.
"""

from __future__ import annotations

import base64
from typing import Any, Protocol

from confluent_kafka import Producer

from streamrec.streams import codecs
from streamrec.streams.producer import DeliveryTracker, produce_event
from streamrec.topics import DEAD_LETTERS, DeadLetter

# Well under the broker's 1 MB default, leaving room for the letter's other fields.
MAX_VALUE_CHARS = 256 * 1024


class DeadLetterSink(Protocol):
    """A synchronous destination for dead letters (a consumer thread's)."""

    def send(self, letter: DeadLetter) -> None: ...


class AsyncDeadLetterSink(Protocol):
    """An asynchronous destination for dead letters (a Faust agent's)."""

    async def send(self, letter: DeadLetter) -> None: ...


def original_value(value: bytes | None) -> str:
    if value is None:
        return ""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "b64:" + base64.b64encode(value).decode()


def dead_letter(
    *,
    source_topic: str,
    processor: str,
    reason: str,
    value: bytes | None,
    key: bytes | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> DeadLetter:
    text = original_value(value)
    if len(text) > MAX_VALUE_CHARS:
        reason = f"{reason} (value cut to {MAX_VALUE_CHARS} of {len(text)} characters)"
        text = text[:MAX_VALUE_CHARS]
    return DeadLetter(
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        key=original_value(key)[:MAX_VALUE_CHARS] if key is not None else None,
        value=text,
        reason=reason,
        processor=processor,
    )


class FaustDeadLetters:
    """Sends dead letters from inside a Faust agent, through the app's producer."""

    def __init__(self, app: Any) -> None:
        from streamrec.streams.app import faust_topic

        self.topic = faust_topic(app, DEAD_LETTERS)
        self.sent = 0

    async def send(self, letter: DeadLetter) -> None:
        await self.topic.send(
            key=DEAD_LETTERS.key_of(letter), value=codecs.encode(DEAD_LETTERS, letter)
        )
        self.sent += 1


class ProducerDeadLetters:
    """Sends dead letters through a librdkafka producer (not flushed here: the consumer
    flushes before it commits the offsets the letters stand for)."""

    def __init__(self, producer: Producer, tracker: DeliveryTracker | None = None) -> None:
        self.producer = producer
        self.tracker = tracker
        self.sent = 0

    def send(self, letter: DeadLetter) -> None:
        produce_event(self.producer, DEAD_LETTERS, letter, self.tracker)
        self.sent += 1
