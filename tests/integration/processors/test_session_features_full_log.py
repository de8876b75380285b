"""The whole ML-100K log through the session and trending processors, and the backfill.

- every one of the 943 users' online features equals the straightforward recomputation;
- `popular:{window}` equals event-time windows counted directly from the log;
- the backfill's offline history gives, through Feast's point-in-time join, each sampled
  user's features as they were at sampled times.
"""

from __future__ import annotations

import random

import pandas as pd
import pytest
import redis

from streamrec.features.backfill import DAY_MS, run_backfill
from streamrec.features.feast_store import offline_dir
from streamrec.features.historical import get_historical_features
from streamrec.features.trending import WINDOWS
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics.stores import POPULAR
from tests.feature_helpers import (
    compare_users,
    merged_counts,
    prepare,
    replay_ml100k,
    wait_caught_up,
    window_counts,
)
from tests.features_reference import assert_features_equal, recompute

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def processed(isolated_stack, ml100k):
    settings = isolated_stack
    genres = prepare(settings, ml100k)
    events = replay_ml100k(settings, ml100k)
    with (
        WorkerProcess(settings, "session-features") as session,
        WorkerProcess(settings, "trending") as trending,
    ):
        wait_caught_up(settings, "streamrec-session-features", session, timeout_s=600)
        wait_caught_up(settings, "streamrec-trending", trending, timeout_s=300)
    return settings, genres, events


def test_every_users_features_equal_the_recomputation(processed):
    settings, genres, events = processed
    assert sum(len(v) for v in events.values()) == 100_000
    compare_users(settings, events, genres, sorted(events, key=int))


def test_popular_lists_are_the_event_time_window_counts(processed):
    settings, _genres, _events = processed
    want = window_counts(settings)
    assert merged_counts(settings) == want
    store = redis.Redis.from_url(settings.redis_url)
    for w in WINDOWS:
        top = store.zrevrange(POPULAR.key(window=w.name), 0, 0, withscores=True)
        assert int(top[0][1]) == max(want[w.name].values())


def test_backfill_history_is_point_in_time_correct(processed):
    settings, genres, events = processed
    report = run_backfill(settings, write_online=False)
    assert report.accepted == 100_000 and report.users == 943
    history = pd.read_parquet(offline_dir(settings) / "user_session.parquet")
    instants = {(u, ts) for u, evs in events.items() for ts, _i, _r in evs}
    assert len(history) == len(instants)
    rng = random.Random(3)
    rows = []
    for user in rng.sample(sorted(events), 12):
        times = sorted(ts for ts, _i, _r in events[user])
        for t in (times[0] - 1, rng.choice(times) - 1, times[-1] + 1):
            rows.append({"user_id": user, "event_timestamp": pd.Timestamp(t, unit="ms", tz="UTC")})
    got = get_historical_features(settings, pd.DataFrame(rows), service="user_features_v1")
    assert len(got) == len(rows)
    for row in got.to_dict("records"):
        user, t = row["user_id"], row["event_timestamp"].value // 1_000_000
        before = [e for e in events[user] if e[0] <= t]
        if not before:
            assert pd.isna(row["last_event_ms"]), (user, t)
            continue
        want = recompute(before, genres, settings.features)
        session = {
            k: row[k]
            for k in (
                "last_items",
                "session_start_ms",
                "session_length_s",
                "session_interactions",
                "genre_affinity",
                "last_event_ms",
            )
        }
        session["last_items"] = list(session["last_items"])
        session["genre_affinity"] = list(session["genre_affinity"])
        assert_features_equal(session, {k: want[k] for k in session}, f"{user}@{t}")
        # Long-term features are daily snapshots: only days that ended before t count.
        days = [e for e in events[user] if e[0] < (t // DAY_MS) * DAY_MS]
        if days:
            lt = recompute(days, genres, settings.features)
            assert row["total_interactions"] == lt["total_interactions"], (user, t)
            assert list(row["top_genres"]) == lt["top_genres"], (user, t)
        else:
            assert pd.isna(row["total_interactions"]), (user, t)
