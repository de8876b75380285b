"""The session features and trending processors on the real broker, Redis and Feast (a
stack of their own).

A subset of ML-100K (the first 15,000 ratings in event time) keeps this module fast; the
whole log is replayed in test_session_features_full_log.py (slow).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
import redis

from streamrec.features.feast_store import feature_store
from streamrec.features.online import OnlineFeatures
from streamrec.features.session import SessionState
from streamrec.processors import trending
from streamrec.processors.session_features import TABLE
from streamrec.streams import codecs
from streamrec.streams.producer import bulk_producer, flush, produce_event
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import (
    DEAD_LETTERS,
    EVENTS_INTERACTIONS,
    FEATURES_CHANGED,
    DeadLetter,
    FeaturesChanged,
    Interaction,
)
from tests.feature_helpers import (
    compare_users,
    merged_counts,
    prepare,
    replay_ml100k,
    stats,
    wait_caught_up,
    window_counts,
)
from tests.features_reference import assert_features_equal, recompute
from tests.kafka_helpers import end_offsets, read_range, wait_for

pytestmark = pytest.mark.integration

N = 15_000
GROUP = "t-session-a"


@pytest.fixture(scope="module")
def loaded(isolated_stack, ml100k):
    genres = prepare(isolated_stack, ml100k)
    events = replay_ml100k(isolated_stack, ml100k, limit=N)
    return isolated_stack, genres, events


@pytest.fixture(scope="module")
def worker(loaded):
    settings, _genres, _events = loaded
    with WorkerProcess(settings, "session-features", GROUP) as w:
        wait_caught_up(settings, GROUP, w)
        yield w


def _sample(events, k=40, seed=4):
    users = sorted(events, key=int)
    return random.Random(seed).sample(users, k)


def test_replay_gives_exactly_the_recomputed_features(loaded, worker):
    settings, genres, events = loaded
    assert stats(settings, GROUP).get("accepted") == N
    compare_users(settings, events, genres, _sample(events))


def test_the_changelog_holds_every_users_latest_state_on_its_partition(loaded, worker):
    # The worker writes its table's changelog itself (DurableTable.put, ADR 0085): the last
    # message per user, on the partition of the user's events, is what recovery rebuilds.
    settings, genres, events = loaded
    changelog = f"{GROUP}-{TABLE}-changelog"
    latest: dict[str, tuple[int, bytes]] = {}
    for p, end in end_offsets(settings, changelog).items():
        for key, value in read_range(settings, changelog, {}, {p: end}):
            latest[key.decode()] = (p, value)
    source: dict[str, int] = {}
    for p, end in end_offsets(settings, EVENTS_INTERACTIONS.name).items():
        for key, _value in read_range(settings, EVENTS_INTERACTIONS.name, {}, {p: end}):
            source[key.decode()] = p
    assert set(events) <= set(latest)
    for user in events:
        partition, raw = latest[user]
        assert partition == source[user], user
        state = SessionState.from_bytes(raw)
        got = {**state.features(), **state.longterm_features(settings.features.top_genres)}
        assert_features_equal(got, recompute(events[user], genres, settings.features), user)


def test_get_online_features_returns_what_the_processor_wrote(loaded, worker):
    settings, _genres, events = loaded
    user = max(events, key=lambda u: len(events[u]))
    store = feature_store(settings)
    raw = store.get_online_features(
        features=store.get_feature_service("user_features_v1"), entity_rows=[{"user_id": user}]
    ).to_dict()
    via_api = OnlineFeatures(settings).get_user_features([user])[user]
    assert raw["last_items"][0] == via_api.last_items
    assert raw["last_event_ms"][0] == events[user][-1][0]
    assert raw["total_interactions"][0] == len(events[user])
    # The processor told the candidates processor about the change.
    changed = read_range(
        settings, FEATURES_CHANGED.name, {}, end_offsets(settings, FEATURES_CHANGED.name)
    )
    notices = [codecs.decode(FEATURES_CHANGED, v) for _k, v in changed]
    mine = [n for n in notices if isinstance(n, FeaturesChanged) and n.user_id == user]
    assert mine and max(n.interactions for n in mine) == len(events[user])


def _murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's `Utils.murmur2`, seed 0x9747B28C)."""
    m, r, length = 0x5BD1E995, 24, len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length % 4
    tail = data[length - rest :]
    if rest == 3:
        h ^= tail[2] << 16
    if rest >= 2:
        h ^= tail[1] << 8
    if rest >= 1:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def test_notices_go_to_their_users_murmur2_partition(loaded, worker):
    # The notices of a batch go out in one produce call; each still lands where the
    # partitioner faust used (murmur2) puts its key, so a user's notices stay in order.
    settings, _genres, _events = loaded
    seen = 0
    for p, end in end_offsets(settings, FEATURES_CHANGED.name).items():
        for key, _value in read_range(settings, FEATURES_CHANGED.name, {}, {p: end}):
            assert key is not None
            assert (_murmur2(key) & 0x7FFFFFFF) % FEATURES_CHANGED.partitions == p, key
            seen += 1
    assert seen >= 100


def test_replaying_the_same_events_again_changes_nothing(loaded, worker, ml100k):
    settings, genres, events = loaded
    sample = _sample(events, k=30, seed=9)
    before = OnlineFeatures(settings).get_user_features(sample)
    replay_ml100k(settings, ml100k, limit=N)
    wait_caught_up(settings, GROUP, worker)
    counts = stats(settings, GROUP)
    assert counts["accepted"] == N
    assert counts.get("duplicate", 0) + counts.get("too_late", 0) == N
    assert OnlineFeatures(settings).get_user_features(sample) == before
    compare_users(settings, events, genres, sample)


def test_a_malformed_event_is_dead_lettered_and_the_next_one_processed(loaded, worker, unique):
    settings, _genres, _events = loaded
    dlq_before = end_offsets(settings, DEAD_LETTERS.name)
    producer = bulk_producer(settings)
    producer.produce(EVENTS_INTERACTIONS.name, key=b"u-bad", value=b'{"user_id": "u-bad"}')
    good = Interaction(
        event_id=f"t:{unique}", user_id=f"u-{unique}", item_id="50", ts=datetime.now(UTC)
    )
    produce_event(producer, EVENTS_INTERACTIONS, good)
    flush(producer)
    reader = OnlineFeatures(settings)
    got = wait_for(
        lambda: (r := reader.get_user_features([good.user_id])[good.user_id]).found and r,
        60,
        "the valid event after the poison one to reach the online store",
    )
    assert got.last_items == ["50"] and got.session_interactions == 1
    assert worker.alive()
    letters = read_range(
        settings, DEAD_LETTERS.name, dlq_before, end_offsets(settings, DEAD_LETTERS.name)
    )
    mine = [
        d
        for d in (codecs.decode(DEAD_LETTERS, v) for _k, v in letters)
        if isinstance(d, DeadLetter) and d.processor == "session-features"
    ]
    assert len(mine) == 1 and mine[0].key == "u-bad"
    assert "event_id" in mine[0].reason and mine[0].value == '{"user_id": "u-bad"}'


@pytest.mark.slow
def test_a_killed_worker_restarts_from_its_changelog_with_nothing_lost(loaded, worker):
    shared, genres, events = loaded
    # Its own Redis database, so group A's rows cannot stand in for anything this one lost.
    settings = shared.with_overrides(redis={"url": shared.redis_url.rsplit("/", 1)[0] + "/1"})
    group = "t-session-kill"
    w = WorkerProcess(settings, "session-features", group).start()
    try:
        # SIGKILL mid-stream: the group has started but not finished the log.
        wait_for(
            lambda: stats(settings, group).get("accepted", 0) >= N // 5,
            180,
            "the first worker to be mid-stream",
        )
        w.kill()
        assert stats(settings, group)["accepted"] < N
        w.start()
        wait_caught_up(settings, group, w)
    finally:
        w.stop()
    # Stats are counted after each batch, so a batch whose table writes reached the
    # changelog before the kill counts as duplicates after the restart: together, all of N.
    counts = stats(settings, group)
    assert counts["accepted"] + counts.get("duplicate", 0) >= N
    # Every user's features, not a sample: nothing lost, nothing counted twice.
    compare_users(settings, events, genres, sorted(events, key=int))


def test_a_trending_worker_killed_before_its_commit_counts_each_event_once(loaded):
    shared, _genres, _events = loaded
    settings = shared.with_overrides(redis={"url": shared.redis_url.rsplit("/", 1)[0] + "/2"})
    group = "t-trending-kill"
    store = redis.Redis.from_url(settings.redis_url)
    # The crash point: the first batch's states are in the changelog, its offsets are not
    # committed (a SIGKILL from outside lands there only by chance).
    crashing = WorkerProcess(
        settings.with_overrides(faults={"trending_exit_after_batch": 1}), "trending", group
    ).start()
    wait_for(lambda: not crashing.alive(), 180, "the trending worker to crash after one batch")
    first = {k.decode(): int(v) for k, v in store.hgetall(trending.stats_key(group)).items()}
    assert first["counted"] > 0
    want = window_counts(settings)
    with WorkerProcess(settings, "trending", group) as w:
        wait_caught_up(settings, group, w)
        try:
            wait_for(lambda: merged_counts(settings) == want, 60, "the merged lists")
        except AssertionError:
            got = merged_counts(settings)
            diff = {
                w: {
                    i: (got[w].get(i), want[w].get(i))
                    for i in set(got[w]) | set(want[w])
                    if got[w].get(i) != want[w].get(i)
                }
                for w in want
            }
            raise AssertionError(f"merged (got, want) where they differ: {diff}") from None
    after = {k.decode(): int(v) for k, v in store.hgetall(trending.stats_key(group)).items()}
    # The restarted worker read the first batch again and skipped it as already counted.
    assert after["redelivered"] == first["counted"] + first["too_late"]
