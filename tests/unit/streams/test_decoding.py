"""The decode-or-dead-letter step: decoded values pass, the rest become dead letters with
their reason and coordinates, counted; no broker (the sink and the counter are doubles)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from confluent_kafka import Message

from streamrec.streams import codecs
from streamrec.streams.dead_letters import MAX_LETTER_BYTES, MAX_VALUE_CHARS, dead_letter
from streamrec.streams.decoding import AgentDecoder, Decoder, Received
from streamrec.topics import CATALOG_VECTORS, DEAD_LETTERS, EVENTS_INTERACTIONS, Interaction
from streamrec.topics.errors import SchemaError
from tests.unit.processors.fakes import AsyncLetters, Letters, Offsets, Tally


def _interaction(event_id: str = "e1") -> Interaction:
    return Interaction(
        event_id=event_id, user_id="u1", item_id="i1", ts=datetime(2026, 1, 1, tzinfo=UTC)
    )


def test_a_valid_message_is_decoded_and_nothing_is_dead_lettered():
    letters, failed = Letters(), Tally()
    decode = Decoder(EVENTS_INTERACTIONS, "proc", letters, failed=failed)
    raw = Received(
        topic=EVENTS_INTERACTIONS.name, value=codecs.encode(EVENTS_INTERACTIONS, _interaction())
    )
    assert decode(raw) == _interaction()
    assert letters.got == [] and failed.value == 0 and decode.dead == 0


def test_a_malformed_message_is_dead_lettered_with_reason_and_coordinates():
    letters, failed = Letters(), Tally()
    decode = Decoder(EVENTS_INTERACTIONS, "proc", letters, failed=failed)
    raw = Received(
        topic=EVENTS_INTERACTIONS.name, value=b'{"event_id": ""}', key=b"u9", partition=3, offset=41
    )
    assert decode(raw) is None
    (letter,) = letters.got
    assert (letter.source_topic, letter.partition, letter.offset) == ("events.interactions", 3, 41)
    assert (letter.key, letter.value, letter.processor) == ("u9", '{"event_id": ""}', "proc")
    assert "event_id" in letter.reason and "user_id" in letter.reason
    assert failed.value == 1 and decode.dead == 1


def test_a_tombstone_and_binary_junk_are_dead_lettered():
    letters = Letters()
    decode = Decoder(EVENTS_INTERACTIONS, "proc", letters, failed=Tally())
    assert decode(Received(topic="t", value=None)) is None
    assert decode(Received(topic="t", value=b"\xff\xfe")) is None
    assert "tombstone" in letters.got[0].reason
    assert letters.got[1].value.startswith("b64:")


def test_confluent_kafka_messages_are_read_for_value_and_coordinates():
    letters = Letters()
    decode = Decoder(EVENTS_INTERACTIONS, "proc", letters, failed=Tally())
    msg = Message(topic="events.interactions", partition=2, offset=7, key=b"k", value=b"nope")
    assert decode(msg) is None
    (letter,) = letters.got
    assert (letter.source_topic, letter.partition, letter.offset, letter.key) == (
        "events.interactions",
        2,
        7,
        "k",
    )


def test_a_custom_decode_function_and_reject_share_the_dead_letter_path():
    def decode_strict(value: bytes | None) -> Interaction:
        event = codecs.decode_json(Interaction, value)
        if event.item_id == "banned":
            raise SchemaError("item is banned")
        return event

    letters, failed = Letters(), Tally()
    decode = Decoder(EVENTS_INTERACTIONS, "proc", letters, decode=decode_strict, failed=failed)
    bad = _interaction().model_copy(update={"item_id": "banned"})
    assert decode(Received(topic="t", value=codecs.encode(EVENTS_INTERACTIONS, bad))) is None
    decode.reject(Received(topic="t", value=b"x", offset=9), "checked later")
    assert letters.reasons == ["item is banned", "checked later"]
    assert letters.got[1].offset == 9 and failed.value == 2


async def test_the_agent_decoder_reads_faust_events_and_awaits_its_sink():
    letters, failed = AsyncLetters(), Tally()
    decode: AgentDecoder[Interaction] = AgentDecoder(
        EVENTS_INTERACTIONS, "agent", letters, failed=failed
    )
    offsets = Offsets(EVENTS_INTERACTIONS)
    good = offsets.event(_interaction(), partition=1)
    junk = offsets.raw(b"junk", partition=1, key=b"u1")
    pairs = await decode.decode_all([good, junk])
    assert pairs == [(good, _interaction())]
    (letter,) = letters.got
    assert (letter.partition, letter.offset, letter.key, letter.processor) == (1, 1, "u1", "agent")
    assert failed.value == 1


def test_vector_topics_decode_with_the_binary_codec():
    decode = Decoder(CATALOG_VECTORS, "proc", Letters(), failed=Tally())
    assert decode(Received(topic="catalog.vectors", value=b'{"item_id": "x"}')) is None


def test_an_oversized_value_is_cut_but_keeps_its_coordinates():
    value = b"a" * (MAX_VALUE_CHARS + 10)
    letter = dead_letter(
        source_topic="t", processor="p", reason="too big", value=value, partition=0, offset=5
    )
    assert 0 < len(letter.value) <= MAX_VALUE_CHARS and value.decode().startswith(letter.value)
    assert letter.reason.startswith("too big") and str(MAX_VALUE_CHARS + 10) in letter.reason
    assert (letter.partition, letter.offset) == (0, 5)
    assert len(codecs.encode(DEAD_LETTERS, letter)) <= MAX_LETTER_BYTES


@pytest.mark.parametrize(
    "value",
    [
        "\U0001f600".encode() * 250_000,  # 1,000,000 bytes, 4 bytes a character
        b"\x01" * 1_000_000,  # 6 bytes a character once escaped in JSON
        b'"' * 1_000_000,
        b"\xff" * 1_000_000,  # not text: base64
    ],
    ids=["emoji", "control", "quotes", "binary"],
)
def test_a_dead_letter_always_fits_whatever_the_characters(value):
    letter = dead_letter(
        source_topic="events.interactions",
        processor="p",
        reason="r" * 100_000,
        value=value,
        key=b"k" * 100_000,
        partition=4,
        offset=1234,
    )
    encoded = codecs.encode(DEAD_LETTERS, letter)
    assert len(encoded) <= MAX_LETTER_BYTES
    assert len(letter.value) > 10_000  # a useful share of the payload is kept
    assert (letter.source_topic, letter.partition, letter.offset) == (
        "events.interactions",
        4,
        1234,
    )
    assert "value cut to" in letter.reason
