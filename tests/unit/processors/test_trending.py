"""The trending processor's logic: per-partition window counts, the changed partitions, and
the popularity feature rows that changed, with in-memory ports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from streamrec.features.trending import TrendingState
from streamrec.infra.settings import FeatureSettings
from streamrec.processors.trending import TrendingProcessor, table_key
from streamrec.topics import EVENTS_INTERACTIONS, Interaction
from tests.unit.processors.fakes import Offsets, agent_decoder

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Table:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.writes: list[tuple[int, bytes]] = []  # (partition of the event, key)

    def read(self, event: Any, key: bytes) -> bytes | None:
        return self.data.get(key)

    def write(self, event: Any, key: bytes, value: bytes) -> None:
        self.writes.append((event.message.partition, key))
        self.data[key] = value


def _processor():
    decode, letters = agent_decoder(EVENTS_INTERACTIONS)
    table = Table()
    return TrendingProcessor(FeatureSettings(), decode, table), table, letters


def _event(o: Offsets, item: str, at: timedelta, p: int):
    ts = T0 + at
    return o.event(Interaction(event_id=f"{item}{ts}{p}", user_id="u", item_id=item, ts=ts), p)


async def test_counts_go_to_their_partition_and_each_changed_state_is_stored_once():
    trending, table, letters = _processor()
    o = Offsets(EVENTS_INTERACTIONS)
    counts = await trending.count(
        [
            _event(o, "a", timedelta(0), 0),
            _event(o, "a", timedelta(minutes=1), 0),
            _event(o, "b", timedelta(minutes=1), 3),
            o.raw(b"junk", partition=3),
        ]
    )
    assert counts == {"counted": 3, "too_late": 0, "redelivered": 0, "dead": 1}
    assert sorted(table.writes) == [(0, table_key(0)), (3, table_key(3))]
    stored = TrendingState.from_bytes(table.data[table_key(0)])
    assert stored.watermark == int((T0 + timedelta(minutes=1)).timestamp() * 1000)
    latest = trending.latest(trending.take_dirty())
    assert latest[0]["1h"] == {"a": 2} and latest[3]["24h"] == {"b": 1}
    assert trending.take_dirty() == []  # taken: nothing changed since
    assert letters.got[0].partition == 3


async def test_events_past_the_allowed_lateness_are_not_counted():
    trending, table, _letters = _processor()
    o = Offsets(EVENTS_INTERACTIONS)
    await trending.count([_event(o, "a", timedelta(hours=3), 1)])
    counts = await trending.count([_event(o, "a", timedelta(0), 1)])
    assert counts == {"counted": 0, "too_late": 1, "redelivered": 0, "dead": 0}
    assert len(table.writes) == 2  # the late batch stores only its applied offset


async def test_a_state_is_resumed_from_the_table():
    first, table, _ = _processor()
    o = Offsets(EVENTS_INTERACTIONS)
    await first.count([_event(o, "a", timedelta(0), 2)])
    second = TrendingProcessor(FeatureSettings(), agent_decoder(EVENTS_INTERACTIONS)[0], table)
    await second.count([_event(o, "a", timedelta(minutes=2), 2)])
    assert second.latest([2])[2]["1h"] == {"a": 2}


def test_feature_rows_only_for_changed_items_and_zeros_once_for_items_that_left():
    trending, _table, _letters = _processor()
    rows = trending.feature_rows({"1h": {"a": 2}, "24h": {"a": 5, "b": 1}}, 1000)
    assert {r["item_id"]: (r["count_1h"], r["count_24h"]) for r in rows} == {
        "a": (2, 5),
        "b": (0, 1),
    }
    assert all(r["window_end_ms"] == r["event_timestamp"] == 1000 for r in rows)
    assert trending.feature_rows({"1h": {"a": 2}, "24h": {"a": 5, "b": 1}}, 2000) == []
    rows = trending.feature_rows({"1h": {}, "24h": {"a": 5}}, 3000)
    assert {r["item_id"]: (r["count_1h"], r["count_24h"]) for r in rows} == {
        "a": (0, 5),
        "b": (0, 0),
    }
    assert "b" not in trending.pushed  # zeros written once, then forgotten


async def test_revoked_partitions_are_forgotten():
    trending, _table, _letters = _processor()
    o = Offsets(EVENTS_INTERACTIONS)
    await trending.count([_event(o, "a", timedelta(0), 0), _event(o, "b", timedelta(0), 1)])
    trending.revoked([1])
    assert trending.take_dirty() == [0] and set(trending.states) == {0}
    assert trending.window_end() > 0


async def test_a_batch_redelivered_after_a_restart_is_not_counted_twice():
    first, table, _ = _processor()
    o = Offsets(EVENTS_INTERACTIONS)
    batch = [_event(o, "a", timedelta(0), 0), _event(o, "b", timedelta(minutes=1), 0)]
    await first.count(batch)
    # The worker died after the state reached the table, before the offsets were committed:
    # the next owner reads the same messages again, and one new one.
    second = TrendingProcessor(FeatureSettings(), agent_decoder(EVENTS_INTERACTIONS)[0], table)
    counts = await second.count([*batch, _event(o, "a", timedelta(minutes=2), 0)])
    assert counts == {"counted": 1, "too_late": 0, "redelivered": 2, "dead": 0}
    assert second.latest([0])[0]["1h"] == {"a": 2, "b": 1}
    assert TrendingState.from_bytes(table.data[table_key(0)]).applied == 2


async def test_a_late_event_advances_the_applied_offset_and_is_not_late_twice():
    trending, table, _ = _processor()
    o = Offsets(EVENTS_INTERACTIONS)
    await trending.count([_event(o, "a", timedelta(hours=3), 1)])
    late = [_event(o, "a", timedelta(0), 1)]
    assert (await trending.count(late))["too_late"] == 1
    assert TrendingState.from_bytes(table.data[table_key(1)]).applied == 1
    assert trending.take_dirty() == [1]  # only the counting batch changed what is published
    again = TrendingProcessor(FeatureSettings(), agent_decoder(EVENTS_INTERACTIONS)[0], table)
    assert (await again.count(late))["redelivered"] == 1


async def test_a_state_resumed_from_the_table_is_published_even_when_nothing_new_counts():
    # The worker died after the batch's state reached the table, before its publish: the
    # next owner reads only that batch again, so nothing counts, yet what is published must
    # become the table's state.
    first, table, _ = _processor()
    o = Offsets(EVENTS_INTERACTIONS)
    batch = [_event(o, "a", timedelta(0), 4), _event(o, "b", timedelta(minutes=1), 4)]
    await first.count(batch)
    second = TrendingProcessor(FeatureSettings(), agent_decoder(EVENTS_INTERACTIONS)[0], table)
    assert (await second.count(batch))["redelivered"] == 2
    assert second.take_dirty() == [4]
    assert second.latest([4])[4]["1h"] == {"a": 1, "b": 1}
    assert (await second.count(batch))["redelivered"] == 2
    assert second.take_dirty() == []  # published once; a later redelivery changes nothing
