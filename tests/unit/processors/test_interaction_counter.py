"""The interaction counter's batch logic: valid and dead-lettered events counted apart."""

from __future__ import annotations

from datetime import UTC, datetime

from streamrec.processors.interaction_counter import InteractionCounter, counter_key
from streamrec.topics import EVENTS_INTERACTIONS, Interaction
from tests.unit.processors.fakes import Offsets, agent_decoder


async def test_valid_events_and_dead_letters_are_counted_apart():
    decode, letters = agent_decoder(EVENTS_INTERACTIONS)
    counter = InteractionCounter("g", decode)
    o = Offsets(EVENTS_INTERACTIONS)
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    batch = [
        o.event(Interaction(event_id="e1", user_id="u", item_id="i", ts=ts)),
        o.raw(b"{}"),
        o.event(Interaction(event_id="e2", user_id="u", item_id="j", ts=ts)),
        o.raw(None),
    ]
    assert await counter.handle(batch) == {counter_key("g"): 2, counter_key("g", dead=True): 2}
    assert [letter.offset for letter in letters.got] == [1, 3]
    assert "tombstone" in letters.got[1].reason
