"""Routing poison messages to dead.letters, with the reason, so a worker never stops on one.

Each processor states its failure policy in its docstring; for malformed input it is always
"dead-letter and carry on": the original bytes are kept (utf-8, or base64 when not text), cut
so that the whole encoded letter is at most `MAX_LETTER_BYTES`. The bound is on the encoded
bytes, not on characters: a character can take 4 bytes in UTF-8 and a control character 6
in JSON (`\u0001`), so 256 K characters of a 1 MB message could still make a letter the
broker refuses (`message.max.bytes`, 1 MB by default, as the original may have been). The
coordinates (topic, partition, offset) and the reason always survive, so the full message
can be read back from its topic.

Sinks (where a consumer's letters go; `streams.decoding` builds the letters and counts them):
- `FaustDeadLetters`: from inside a Faust agent, through the app's producer (async);
- `ProducerDeadLetters`: from a plain confluent-kafka consumer thread, through a librdkafka
  producer (sync), optionally tracking deliveries so a batch can wait for its letters.
"""

from __future__ import annotations

import base64
from typing import Any, Protocol

import orjson
from confluent_kafka import Producer

from streamrec.streams import codecs
from streamrec.streams.producer import DeliveryTracker, produce_event
from streamrec.topics import DEAD_LETTERS, DeadLetter

# A whole encoded letter, well under the broker's and the clients' 1 MB defaults (a letter
# must always fit, whatever the original's size or characters).
MAX_LETTER_BYTES = 256 * 1024
MAX_VALUE_CHARS = MAX_LETTER_BYTES  # the value is never longer than this, in characters
MAX_KEY_CHARS = 1024
MAX_REASON_CHARS = 4096


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
    reason = reason[:MAX_REASON_CHARS]
    key_text = original_value(key)[:MAX_KEY_CHARS] if key is not None else None
    # Room for the value: the budget less the letter's other fields, with margin for the
    # cut note added to the reason.
    rest = DeadLetter(
        source_topic=source_topic[:MAX_KEY_CHARS],
        partition=partition,
        offset=offset,
        key=key_text,
        value="",
        reason=reason,
        processor=processor,
    )
    room = MAX_LETTER_BYTES - len(rest.model_dump_json()) - 200
    cut = _fit(text, room)
    if len(cut) < len(text):
        reason = (
            f"{reason} (value cut to {len(cut)} of {len(text)} characters, "
            f"{len(value or b'')} bytes)"
        )
    return rest.model_copy(update={"value": cut, "reason": reason})


def _json_len(text: str) -> int:
    return len(orjson.dumps(text))


def _fit(text: str, room: int) -> str:
    """The longest prefix of `text` whose JSON form takes at most `room` bytes."""
    n = min(len(text), max(room, 0))
    size = _json_len(text[:n])
    while size > room and n > 0:
        # Shrink in proportion to the overshoot (characters of one kind cost alike), then
        # by at least one character: a few rounds even for 6-byte escapes.
        n = min(n - 1, n * room // size)
        size = _json_len(text[:n])
    return text[:n]


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
