"""Routing poison messages to dead.letters, with the reason, so a worker never stops on one.

Each processor states its failure policy in its docstring; for malformed input it is always
"dead-letter and carry on": the original bytes are kept (utf-8, or base64 when not text).
"""

from __future__ import annotations

import base64
from typing import Any

from streamrec.streams import codecs
from streamrec.topics import DEAD_LETTERS, DeadLetter


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
    return DeadLetter(
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        key=original_value(key) if key is not None else None,
        value=original_value(value),
        reason=reason,
        processor=processor,
    )


class FaustDeadLetters:
    """Sends dead letters from inside a Faust agent, through the app's producer."""

    def __init__(self, app: Any, processor: str) -> None:
        from streamrec.streams.app import faust_topic

        self.processor = processor
        self.topic = faust_topic(app, DEAD_LETTERS)
        self.sent = 0

    async def send(self, event: Any, reason: str) -> None:
        """`event` is a faust EventT (value plus its message's topic, partition and offset)."""
        msg = event.message
        letter = dead_letter(
            source_topic=msg.topic,
            processor=self.processor,
            reason=reason,
            value=event.value,
            key=event.key,
            partition=msg.partition,
            offset=msg.offset,
        )
        await self.topic.send(
            key=DEAD_LETTERS.key_of(letter), value=codecs.encode(DEAD_LETTERS, letter)
        )
        self.sent += 1
