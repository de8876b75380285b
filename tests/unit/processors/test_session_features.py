"""The session features processor's batch logic, driven with plain events and in-memory
ports: what it writes to the online store, publishes and stores, in which order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streamrec.features.session import SessionState
from streamrec.infra.settings import FeatureSettings
from streamrec.processors.session_features import (
    LONGTERM_VIEW,
    VIEW,
    SessionFeaturesProcessor,
)
from streamrec.processors.state_cache import StateCache
from streamrec.streams import codecs
from streamrec.topics import EVENTS_INTERACTIONS, FEATURES_CHANGED, FeaturesChanged, Interaction
from tests.unit.processors.fakes import Offsets, agent_decoder

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


class Table:
    def __init__(self, log: list[str]) -> None:
        self.data: dict[bytes, bytes] = {}
        self.reads: list[bytes] = []
        self.writes: list[dict[bytes, tuple[int, bytes]]] = []
        self.log = log

    def read(self, event: Any, key: bytes) -> bytes | None:
        self.reads.append(key)
        return self.data.get(key)

    async def write(self, states: Mapping[bytes, tuple[int, bytes]]) -> None:
        self.log.append("table")
        self.writes.append(dict(states))
        self.data.update({k: v for k, (_p, v) in states.items()})


class Store:
    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.log = log
        self.fail = fail

    async def write_many_async(
        self, rows: Mapping[str, Sequence[dict[str, Any]]], *, check_stored: bool = True
    ) -> None:
        if self.fail:
            raise ConnectionError("online store down")
        self.log.append("store")
        for view, r in rows.items():
            self.rows.setdefault(view, []).extend(r)


def _setup(fail: bool = False, cache_max: int = 100):
    log: list[str] = []
    decode, letters = agent_decoder(EVENTS_INTERACTIONS)
    table, store = Table(log), Store(log, fail)
    notices: list[FeaturesChanged] = []

    def publish(messages: list[dict[str, bytes]]) -> None:
        log.append("notices")  # one call for the batch's notices
        for m in messages:
            notice = codecs.decode(FEATURES_CHANGED, m["value"])
            assert isinstance(notice, FeaturesChanged)
            # The bytes and key the schema's own encoding gives.
            assert m["value"] == codecs.encode(FEATURES_CHANGED, notice)
            assert m["key"] == FEATURES_CHANGED.key_of(notice)
            notices.append(notice)

    cache: StateCache[SessionState] = StateCache(cache_max)
    genres = {"i1": ("Comedy",), "i2": ("Drama",)}
    processor = SessionFeaturesProcessor(
        FeatureSettings(), decode, table, store, publish, lambda i: genres.get(i, ()), cache
    )
    return processor, table, store, notices, letters, cache, log


def _event(offsets: Offsets, event_id: str, user: str, item: str, at: timedelta, p: int = 0):
    interaction = Interaction(event_id=event_id, user_id=user, item_id=item, ts=T0 + at)
    return offsets.event(interaction, partition=p)


async def test_a_batch_writes_features_then_notices_then_states():
    processor, table, store, notices, letters, _cache, log = _setup()
    o = Offsets(EVENTS_INTERACTIONS)
    batch = [
        _event(o, "e1", "alice", "i1", timedelta(0), p=2),
        _event(o, "e2", "alice", "i2", timedelta(minutes=1), p=2),
        _event(o, "e3", "bob", "i1", timedelta(minutes=2), p=4),
    ]
    counts = await processor.handle(batch)
    assert counts == {"accepted": 3, "duplicate": 0, "too_late": 0, "dead": 0, "redelivered": 0}
    assert log == ["store", "notices", "table"]
    session = {r["user_id"]: r for r in store.rows[VIEW]}
    assert session["alice"]["last_items"] == ["i1", "i2"]
    assert session["alice"]["session_interactions"] == 2
    longterm = {r["user_id"]: r for r in store.rows[LONGTERM_VIEW]}
    assert longterm["alice"]["top_genres"] == ["Comedy", "Drama"]
    assert {(n.user_id, n.interactions) for n in notices} == {("alice", 2), ("bob", 1)}
    alice = next(n for n in notices if n.user_id == "alice")
    assert alice.last_event_ts == T0 + timedelta(minutes=1)
    (written,) = table.writes
    assert {k: p for k, (p, _v) in written.items()} == {b"alice": 2, b"bob": 4}
    assert SessionState.from_bytes(written[b"alice"][1]).total == 2
    assert letters.got == []


async def test_duplicates_change_nothing_and_the_cache_spares_a_table_read():
    processor, table, store, notices, _letters, _cache, _log = _setup()
    o = Offsets(EVENTS_INTERACTIONS)
    await processor.handle([_event(o, "e1", "alice", "i1", timedelta(0))])
    counts = await processor.handle([_event(o, "e1", "alice", "i1", timedelta(0))])
    assert counts["duplicate"] == 1 and counts["accepted"] == 0
    assert table.reads == [b"alice"]  # the second batch found alice's state in the cache
    assert len(table.writes) == 1 and len(notices) == 1 and len(store.rows[VIEW]) == 1


async def test_a_stored_state_is_continued_and_late_events_are_dropped():
    processor, table, _store, notices, _letters, _cache, _log = _setup(cache_max=0)
    o = Offsets(EVENTS_INTERACTIONS)
    await processor.handle([_event(o, "e1", "alice", "i1", timedelta(hours=2))])
    counts = await processor.handle(
        [
            _event(o, "e2", "alice", "i2", timedelta(hours=2, minutes=1)),
            _event(o, "old", "alice", "i2", timedelta(0)),  # two hours late
        ]
    )
    assert counts["accepted"] == 1 and counts["too_late"] == 1
    assert table.reads == [b"alice", b"alice"]  # no cache: read back from the table
    assert notices[-1].interactions == 2


async def test_malformed_events_are_dead_lettered_and_the_rest_processed():
    processor, _table, store, _notices, letters, _cache, _log = _setup()
    o = Offsets(EVENTS_INTERACTIONS)
    batch = [o.raw(b"not json", partition=1), _event(o, "e1", "alice", "i1", timedelta(0))]
    counts = await processor.handle(batch)
    assert counts["dead"] == 1 and counts["accepted"] == 1
    (letter,) = letters.got
    assert (letter.source_topic, letter.partition, letter.offset) == ("events.interactions", 1, 0)
    assert [r["user_id"] for r in store.rows[VIEW]] == ["alice"]


async def test_a_store_failure_raises_before_the_table_and_drops_the_cache():
    processor, table, _store, notices, _letters, cache, _log = _setup(fail=True)
    o = Offsets(EVENTS_INTERACTIONS)
    epoch = cache.epoch
    with pytest.raises(ConnectionError):
        await processor.handle([_event(o, "e1", "alice", "i1", timedelta(0))])
    assert table.writes == [] and notices == []
    assert cache.epoch == epoch + 1 and len(cache) == 0


async def test_a_batch_redelivered_after_a_restart_counts_as_redelivered_not_late():
    # Few remembered ids: the floor moves past the first events, so a redelivery decided
    # by lateness and ids alone would call them too late.
    log: list[str] = []
    decode, _letters = agent_decoder(EVENTS_INTERACTIONS)
    table, store = Table(log), Store(log)
    cfg = FeatureSettings(recent_ids_max=2)

    def processor() -> SessionFeaturesProcessor:  # a fresh process: an empty cache
        return SessionFeaturesProcessor(
            cfg, decode, table, store, lambda m: None, lambda i: (), StateCache(100)
        )

    o = Offsets(EVENTS_INTERACTIONS)
    batch = [_event(o, f"e{i}", "alice", "i1", timedelta(minutes=i), p=1) for i in range(5)]
    assert (await processor().handle(batch))["accepted"] == 5
    again = await processor().handle(batch)  # same offsets, read back from the table
    assert again["redelivered"] == 5
    assert again["too_late"] == 0 and again["duplicate"] == 0 and again["accepted"] == 0
    # A real late event (new offset) is still late, and a new one is accepted.
    late = _event(o, "late", "alice", "i1", timedelta(minutes=-30), p=1)
    new = _event(o, "new", "alice", "i1", timedelta(minutes=9), p=1)
    after = await processor().handle([late, new])
    assert (after["too_late"], after["accepted"], after["redelivered"]) == (1, 1, 0)
