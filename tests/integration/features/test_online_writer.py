"""OnlineWriter against real Redis and Feast: what it writes is what `get_online_features` reads."""

from __future__ import annotations

import pytest

from streamrec.features import feast_store, online_writer
from streamrec.features.online import OnlineFeatures
from streamrec.features.online_writer import OnlineWriter

pytestmark = pytest.mark.integration


def _session(user: str, ts: int, items: list[str], count: int) -> dict[str, object]:
    return {
        "user_id": user,
        "last_items": items,
        "session_start_ms": ts - 60_000,
        "session_length_s": 60.0,
        "session_interactions": count,
        "genre_affinity": [float(i) / 7 for i in range(19)],
        "last_event_ms": ts,
        "event_timestamp": ts,
    }


def _longterm(user: str, ts: int, total: int) -> dict[str, object]:
    return {
        "user_id": user,
        "total_interactions": total,
        "top_genres": ["Drama", "Comedy"],
        "mean_rating": 3.25,
        "event_timestamp": ts,
    }


@pytest.fixture(scope="module")
def writer(stack):
    feast_store.apply(stack)
    return stack, OnlineWriter(stack)


def test_rows_of_two_views_are_read_back_through_feast(writer, unique):
    settings, w = writer
    users = [f"{unique}-w{i}" for i in range(3)]
    ts = 1_700_000_000_123
    w.write_many(
        {
            "user_session_fv": [
                _session(u, ts + i, [f"i{i}", "i9"], i + 1) for i, u in enumerate(users)
            ],
            "user_longterm_fv": [_longterm(u, ts + i, 10 + i) for i, u in enumerate(users)],
        }
    )
    got = OnlineFeatures(settings).get_user_features(users)
    for i, u in enumerate(users):
        row = got[u]
        assert row.found
        assert row.last_items == [f"i{i}", "i9"]
        assert row.last_event_ms == ts + i
        assert row.session_start_ms == ts + i - 60_000
        assert row.session_interactions == i + 1
        assert row.genre_affinity == pytest.approx([float(k) / 7 for k in range(19)])
        assert row.total_interactions == 10 + i
        assert row.top_genres == ["Drama", "Comedy"]
        assert row.mean_rating == pytest.approx(3.25)


def test_with_the_check_same_event_time_overwrites_and_an_older_row_is_skipped(writer, unique):
    settings, w = writer
    user = f"{unique}-same"
    ts = 1_700_000_100_000
    w.write_many({"user_session_fv": [_session(user, ts, ["a"], 1)]}, check_stored=True)
    # A later batch whose newest event shares the second: newer state, same event time.
    w.write_many({"user_session_fv": [_session(user, ts, ["a", "b"], 2)]}, check_stored=True)
    assert OnlineFeatures(settings).get_user_features([user])[user].session_interactions == 2
    skipped = w.rows_skipped
    w.write_many({"user_session_fv": [_session(user, ts - 1, ["old"], 9)]}, check_stored=True)
    row = OnlineFeatures(settings).get_user_features([user])[user]
    assert (row.session_interactions, row.last_items) == (2, ["a", "b"])
    assert w.rows_skipped == skipped + 1


def test_without_the_check_every_row_is_written(writer, unique):
    settings, w = writer
    user = f"{unique}-nocheck"
    ts = 1_700_000_200_000
    w.write_many({"user_session_fv": [_session(user, ts, ["a"], 1)]}, check_stored=False)
    w.write_many({"user_session_fv": [_session(user, ts - 5, ["b"], 3)]}, check_stored=False)
    row = OnlineFeatures(settings).get_user_features([user])[user]
    assert (row.session_interactions, row.last_items) == (3, ["b"])


def test_entity_keys_kept_between_calls_stay_bounded_and_right(writer, unique, monkeypatch):
    settings, w = writer
    monkeypatch.setattr(online_writer, "ENTITY_KEYS_MAX", 2)
    users = [f"{unique}-keys-{i}" for i in range(5)]
    ts = 1_700_000_300_000
    for i, user in enumerate(users):  # one call per user: the kept keys overflow and restart
        w.write_many({"user_session_fv": [_session(user, ts, [str(i)], i + 1)]})
        assert len(w._keys) <= online_writer.ENTITY_KEYS_MAX + 1
    got = OnlineFeatures(settings).get_user_features(users)
    assert [(got[u].session_interactions, got[u].last_items) for u in users] == [
        (i + 1, [str(i)]) for i in range(5)
    ]


async def test_the_serving_reader_reads_what_feast_reads(writer, unique):
    # The hot-path reader (one HMGET in Feast's layout) against Feast's get_online_features
    # on the same rows: both views, only the session view, only the long-term view, nothing.
    import redis.asyncio as aioredis

    from streamrec.features.user_reader import UserFeatureReader

    settings, w = writer
    both, session_only, longterm_only, unknown = (f"{unique}-r{i}" for i in range(4))
    ts = 1_700_000_100_000
    w.write_many(
        {
            "user_session_fv": [
                _session(both, ts, ["a", "b", "c"], 3),
                _session(session_only, ts + 1, ["z"], 1),
            ],
            "user_longterm_fv": [_longterm(both, ts, 42), _longterm(longterm_only, ts, 7)],
        }
    )
    users = [both, session_only, longterm_only, unknown]
    want = OnlineFeatures(settings).get_user_features(users)
    client = aioredis.from_url(settings.redis_url)
    try:
        reader = UserFeatureReader(settings)
        got = {u: await reader.read(client, u) for u in users}
    finally:
        await client.aclose()
    assert got == want
    assert got[both].found and got[both].total_interactions == 42
    assert got[both].genre_affinity == [float(i) / 7 for i in range(19)]
    assert not got[longterm_only].found and got[longterm_only].total_interactions == 7
    assert not got[unknown].found
