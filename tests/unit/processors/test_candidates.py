"""The candidates processor's logic: which inputs mark which users due, and the rebuild's
outcome on success and failure, with in-memory ports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from streamrec.candidates.debounce import Debouncer
from streamrec.processors.candidates import CandidatesProcessor
from streamrec.topics import (
    CACHE_INVALIDATIONS,
    EVENTS_INTERACTIONS,
    FEATURES_CHANGED,
    REGISTRY_CHANGES,
    CandidatesUpdated,
    FeaturesChanged,
    Interaction,
    RefreshCommand,
    RegistryChange,
)
from streamrec.topics.stores import CandidateList
from tests.unit.processors.fakes import AsyncLetters, Offsets

TS = datetime(2026, 1, 1, tzinfo=UTC)


class History:
    def __init__(self) -> None:
        self.recorded: list[Any] = []

    async def record(self, events: Sequence[Any]) -> set[str]:
        self.recorded.extend(events)
        return {e.user_id for e in events}


class Builder:
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.built: list[list[str]] = []

    async def build(self, user_ids: Sequence[str]) -> list[CandidateList]:
        if self.fail is not None:
            raise self.fail
        self.built.append(list(user_ids))
        return [CandidateList(user_id=u, model_version="v1", items=[]) for u in user_ids]

    async def write(self, lists: Sequence[CandidateList]) -> list[CandidatesUpdated]:
        return [CandidatesUpdated(user_id=c.user_id, count=0, model_version="v1") for c in lists]


def _processor(builder: Builder | None = None):
    letters, history = AsyncLetters(), History()
    processor = CandidatesProcessor(history, builder or Builder(), Debouncer(0.0), letters)
    return processor, history, letters


async def test_interactions_are_recorded_and_their_users_become_due():
    processor, history, letters = _processor()
    o = Offsets(EVENTS_INTERACTIONS)
    await processor.on_interactions(
        [
            o.event(Interaction(event_id="e1", user_id="u1", item_id="i", ts=TS)),
            o.raw(b"{not json"),
            o.event(Interaction(event_id="e2", user_id="u2", item_id="i", ts=TS)),
        ]
    )
    assert [e.event_id for e in history.recorded] == ["e1", "e2"]
    assert sorted(processor.due()) == ["u1", "u2"]
    assert [(x.source_topic, x.offset) for x in letters.got] == [("events.interactions", 1)]


async def test_feature_changes_and_candidate_refreshes_mark_users_other_targets_do_not():
    processor, _history, letters = _processor()
    f, c = Offsets(FEATURES_CHANGED), Offsets(CACHE_INVALIDATIONS)
    await processor.on_features_changed(
        [f.event(FeaturesChanged(user_id="a", interactions=3, last_event_ts=TS))]
    )
    await processor.on_refresh_commands(
        [
            c.event(RefreshCommand(user_id="b", reason="vector")),
            c.event(RefreshCommand(target="response_cache", user_id="c", reason="vector")),
            c.raw(b'{"user_id": "d"}'),
        ]
    )
    assert sorted(processor.due()) == ["a", "b"]
    assert [x.source_topic for x in letters.got] == ["cache.invalidations"]


async def test_only_retriever_changes_ask_for_a_reload():
    processor, _history, _letters = _processor()
    r = Offsets(REGISTRY_CHANGES)

    def change(kind: str) -> Any:
        return r.event(RegistryChange(kind=kind, name=kind, version="2", action="promote"))

    assert await processor.on_registry_changes([change("index"), change("ranker")]) is False
    assert await processor.on_registry_changes([change("index"), change("retriever")]) is True


async def test_a_rebuild_returns_the_summaries_of_its_users():
    builder = Builder()
    processor, _history, _letters = _processor(builder)
    summaries = await processor.rebuild(["u1", "u2"])
    assert summaries is not None and [s.user_id for s in summaries] == ["u1", "u2"]
    assert builder.built == [["u1", "u2"]]


async def test_a_redis_failure_marks_the_users_again_other_failures_do_not():
    processor, _history, _letters = _processor(Builder(fail=RedisConnectionError("down")))
    assert await processor.rebuild(["u1"]) is None
    assert processor.due() == ["u1"]
    processor, _history, _letters = _processor(Builder(fail=ValueError("bad model")))
    assert await processor.rebuild(["u1"]) is None
    assert processor.due() == []
