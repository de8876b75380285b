"""The candidates processor on the real broker and Redis, with a model trained on ML-100K.

A short training run (one epoch each) is published and promoted into this module's own
stack; the processor then runs as a real worker process.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import redis

from streamrec.candidates.state import HISTORY
from streamrec.models.dataset import load_events
from streamrec.models.ranker import RankerModel
from streamrec.models.registry import Manifest, ModelRegistry
from streamrec.models.train import train
from streamrec.streams import codecs
from streamrec.streams.producer import flush, latency_producer, produce_event
from streamrec.streams.sources.movielens import load_items
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import (
    DEAD_LETTERS,
    EVENTS_INTERACTIONS,
    DeadLetter,
    Interaction,
    candidate_codec,
)
from streamrec.topics.stores import USER_CANDIDATES, CandidateList
from tests.kafka_helpers import end_offsets, read_range, wait_for

# The module trains a model first: more than the default 600 s on a busy 2-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

KINDS = ("retriever", "ranker")


@pytest.fixture(scope="module")
def trained(isolated_stack, ml100k, tmp_path_factory):
    # The first 300 users' events, one epoch each, no evaluation: a real model, trained fast.
    events = load_events(isolated_stack)
    log = tmp_path_factory.mktemp("log") / "subset.jsonl"
    with open(log, "wb") as fh:
        for r in events[events.user_id.astype(int) <= 300].itertuples():
            row = {"user_id": r.user_id, "item_id": r.item_id, "rating": r.rating, "ts": r.ts}
            fh.write(orjson.dumps(row) + b"\n")
    result = train(
        isolated_stack, source=str(log), retriever_epochs=1, ranker_epochs=1, evaluation=False
    )
    registry = ModelRegistry(isolated_stack)
    for kind in KINDS:
        registry.promote(kind, result.ranker.version)
    return isolated_stack, result


@pytest.fixture(scope="module")
def worker(trained):
    settings, _ = trained
    with WorkerProcess(settings, "candidates", "t-candidates") as w:
        yield w


@pytest.fixture(scope="module")
def genres(ml100k):
    return {i.item_id: set(i.genres) for i in load_items(ml100k)}


def _send(settings, user, items, start):
    producer = latency_producer(settings)
    for n, item in enumerate(items):
        e = Interaction(
            event_id=f"{user}-{start + n}",
            user_id=user,
            item_id=item,
            kind="rating",
            rating=4,
            ts=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=start + n),
        )
        produce_event(producer, EVENTS_INTERACTIONS, e)
    flush(producer)


def _candidates(settings, user) -> CandidateList | None:
    raw = redis.Redis.from_url(settings.redis_url).get(USER_CANDIDATES.key(user_id=user))
    return candidate_codec.decode(raw) if raw else None


def _rebuilt_after(settings, user, last_item, since, worker):
    """The user's list once it was rebuilt after `last_item` was recorded."""
    store = redis.Redis.from_url(settings.redis_url)

    def ready():
        assert worker.alive(), f"the candidates worker died; see {worker.log}"
        head = store.lindex(HISTORY.format(user_id=user), 0)
        c = _candidates(settings, user)
        if head == last_item.encode() and c and c.computed_at > since:
            return c
        return None

    return wait_for(ready, 90, f"{user}'s candidates rebuilt after {last_item}")


def _share(c: CandidateList, genres, genre: str, top: int = 100) -> float:
    items = c.items[:top]
    return sum(genre in genres.get(i.item_id, ()) for i in items) / max(len(items), 1)


def test_a_genre_burst_shifts_the_users_candidates_to_that_genre(trained, worker, genres):
    settings, result = trained
    user = "burst-user"
    mixed = [i for i, g in genres.items() if "Comedy" in g and "Horror" not in g][:20]
    horror = [i for i, g in genres.items() if "Horror" in g][:15]
    t0 = datetime.now(UTC)
    _send(settings, user, mixed, 0)
    before = _rebuilt_after(settings, user, mixed[-1], t0, worker)
    assert before.model_version == result.ranker.version
    assert len(before.items) == settings.candidates.max_candidates
    assert {"two_tower", "covisit", "content", "trending"} >= {
        s for c in before.items for s in c.sources
    }
    assert not set(mixed) & {c.item_id for c in before.items}  # seen items are left out
    t1 = datetime.now(UTC)
    _send(settings, user, horror, 100)
    after = _rebuilt_after(settings, user, horror[-1], t1, worker)
    share_before, share_after = _share(before, genres, "Horror"), _share(after, genres, "Horror")
    assert share_after >= share_before + 0.15, (share_before, share_after)
    assert any("content" in c.sources for c in after.items[:50])


def test_session_users_get_session_based_candidates(trained, worker, genres):
    settings, _ = trained
    user = "new-session-user"
    horror = [i for i, g in genres.items() if "Horror" in g][20:23]
    t0 = datetime.now(UTC)
    _send(settings, user, horror, 0)
    c = _rebuilt_after(settings, user, horror[-1], t0, worker)
    top = c.items[:50]
    session_sourced = [x for x in top if {"content", "covisit"} & set(x.sources)]
    assert len(session_sourced) >= 25  # not just the popular list
    assert _share(c, genres, "Horror", 50) > 0.2


def test_malformed_interactions_go_to_dead_letters(trained, worker):
    settings, _ = trained
    start = end_offsets(settings, DEAD_LETTERS.name)
    producer = latency_producer(settings)
    producer.produce(EVENTS_INTERACTIONS.name, key=b"bad", value=b'{"user_id": "bad"}')
    flush(producer)
    # The worker keeps running and says why.
    letters = wait_for(
        lambda: [
            d
            for _, v in read_range(
                settings, DEAD_LETTERS.name, start, end_offsets(settings, DEAD_LETTERS.name)
            )
            if (d := codecs.decode(DEAD_LETTERS, v)).processor == "candidates"
        ],
        60,
        "a dead letter from the candidates processor",
    )
    assert isinstance(letters[0], DeadLetter) and "event_id" in letters[0].reason
    assert worker.alive()


def test_promote_and_rollback_change_the_version_used(trained, worker):
    settings, result = trained
    registry = ModelRegistry(settings)
    old = result.ranker.version
    new = f"{old}-copy"
    for kind in KINDS:  # a second version: the same artifacts under another name
        staging = registry.new_version_dir(kind, new)
        src = registry.get(kind, old).path
        for f in src.iterdir():
            if f.name != "manifest.json":
                shutil.copy(f, staging / f.name)
        registry.publish(kind, staging, Manifest(kind=kind, version=new))
        registry.promote(kind, new)
    # Serving loads the promoted ranker; the candidates processor follows the pointer.
    assert RankerModel.load(registry.promoted("ranker").path, "cpu").version == new
    user = "promote-user"
    _wait_for_version(settings, user, new, worker)
    for kind in KINDS:
        assert registry.rollback(kind).version == old
    assert RankerModel.load(registry.promoted("ranker").path, "cpu").version == old
    _wait_for_version(settings, user, old, worker)


def _wait_for_version(settings, user, version, worker):
    """Interact until the user's list is rebuilt by `version` (the worker checks the pointer
    every few seconds, so an event sent before it looked may still get the previous one)."""
    sent = iter(range(1000))

    def built_by_version():
        assert worker.alive(), f"the candidates worker died; see {worker.log}"
        t = datetime.now(UTC)
        _send(settings, user, [str(next(sent) % 300 + 1)], next(sent))
        c = wait_for(
            lambda: (c := _candidates(settings, user)) and c.computed_at > t and c, 30, "rebuild"
        )
        return c.model_version == version

    wait_for(built_by_version, 60, f"candidates built by {version}", interval=0.5)
