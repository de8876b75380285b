"""Helpers of the features tests: load a stack with ML-100K, wait for a group, compare users."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import redis
from confluent_kafka import Consumer, TopicPartition

from streamrec.features import feast_store
from streamrec.features.log_reader import read_topic
from streamrec.features.online import OnlineFeatures
from streamrec.features.session import ts_ms
from streamrec.features.trending import WINDOWS
from streamrec.infra.settings import Settings
from streamrec.processors.session_features import stats_key
from streamrec.processors.trending import all_key
from streamrec.streams import codecs
from streamrec.streams.catalog import publish_items
from streamrec.streams.replay import ReplayOptions, replay
from streamrec.streams.sources.movielens import MovieLensInteractions, load_items
from streamrec.topics import EVENTS_INTERACTIONS, Interaction
from streamrec.topics.errors import SchemaError
from tests.features_reference import assert_features_equal, recompute
from tests.kafka_helpers import end_offsets, wait_for

UserEvents = dict[str, list[tuple[int, str, float | None]]]


def prepare(settings: Settings, ml100k: Path) -> dict[str, tuple[str, ...]]:
    """Feast apply + the catalog published; returns item -> genres (the reference's view)."""
    feast_store.apply(settings)
    items = load_items(ml100k)
    publish_items(settings, items)
    return {i.item_id: tuple(i.genres) for i in items}


def replay_ml100k(
    settings: Settings, ml100k: Path, limit: int | None = None, rate: float | None = None
) -> UserEvents:
    """Produce the first `limit` ratings (event-time order, at `rate`/s or as fast as the
    broker takes them); returns them per user."""
    pacing = {"pacing": "rate", "rate": rate} if rate else {}
    report = replay(
        settings,
        MovieLensInteractions(ml100k),
        "ml-100k",
        ReplayOptions(limit=limit, progress=False, **pacing),
    )
    assert report.malformed == 0
    return per_user(ml100k, limit)


def per_user(ml100k: Path, limit: int | None = None) -> UserEvents:
    events: UserEvents = defaultdict(list)
    n = 0
    for ev in MovieLensInteractions(ml100k):
        if not isinstance(ev, Interaction):
            continue
        if limit is not None and n >= limit:
            break
        events[ev.user_id].append((ts_ms(ev.ts.timestamp()), ev.item_id, ev.rating))
        n += 1
    return dict(events)


def stats(settings: Settings, group: str) -> dict[str, int]:
    raw = redis.Redis.from_url(settings.redis_url).hgetall(stats_key(group))
    return {k.decode(): int(v) for k, v in raw.items()}


def committed_to_end(settings: Settings, group: str, topic: str = EVENTS_INTERACTIONS.name) -> bool:
    """True once `group` has committed every partition of `topic` up to its end offset."""
    ends = end_offsets(settings, topic)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in ends], timeout=10)
    finally:
        consumer.close()
    return all(tp.offset >= ends[tp.partition] for tp in committed if ends[tp.partition] > 0)


def wait_caught_up(settings: Settings, group: str, worker, timeout_s: float = 240) -> None:
    def done() -> bool:
        assert worker.alive(), f"the worker died; see {worker.log}"
        return committed_to_end(settings, group)

    wait_for(done, timeout_s, f"group {group} to commit the whole log", interval=0.5)


def compare_users(
    settings: Settings,
    events: UserEvents,
    genres: dict[str, tuple[str, ...]],
    users: list[str],
) -> None:
    """Every user's online features equal the straightforward recomputation."""
    got = OnlineFeatures(settings).get_user_features(users)
    for user in users:
        want = recompute(events[user], genres, settings.features)
        row = got[user]
        assert row.found, f"user {user} has no online features"
        assert_features_equal(row.model_dump(), want, f"user {user}")


def window_counts(settings: Settings) -> dict[str, dict[str, int]]:
    """window -> item -> count of the latest window of each partition (the one holding its
    newest event time), summed over partitions: what trending's merged lists must hold.
    Each partition's events are taken in offset order, and one older than the partition's
    newest event time so far by more than `features.allowed_lateness_s` is not counted, as
    the processor drops it. Malformed messages are skipped, as the processor dead-letters
    them."""
    lateness_ms = settings.features.allowed_lateness_s * 1000
    per_partition: dict[int, list[tuple[int, str]]] = {}
    watermarks: dict[int, int] = {}
    for p, _o, _k, value in read_topic(settings, EVENTS_INTERACTIONS.name):
        try:
            ev = codecs.decode(EVENTS_INTERACTIONS, value)
        except SchemaError:
            continue
        ts = ts_ms(ev.ts.timestamp())
        watermark = watermarks.get(p)
        if watermark is not None and ts < watermark - lateness_ms:
            continue  # too late
        watermarks[p] = ts if watermark is None else max(watermark, ts)
        per_partition.setdefault(p, []).append((ts, ev.item_id))
    out = {}
    for w in WINDOWS:
        want: Counter[str] = Counter()
        for p, rows in per_partition.items():
            end = watermarks[p] - watermarks[p] % w.hop_ms + w.hop_ms
            want.update(item for ts, item in rows if end - w.size_ms <= ts < end)
        out[w.name] = dict(want)
    return out


def merged_counts(settings: Settings) -> dict[str, dict[str, int]]:
    """window -> item -> count in trending's merged list (`popular:{window}:all`)."""
    store = redis.Redis.from_url(settings.redis_url)
    return {
        w.name: {
            m.decode(): int(s) for m, s in store.zrange(all_key(w.name), 0, -1, withscores=True)
        }
        for w in WINDOWS
    }
