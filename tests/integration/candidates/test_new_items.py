"""Items added after training reach candidate lists through the live vector index.

Real broker and Redis (`isolated_stack`), the real trained retriever (the cached test ranker,
trained once per data cache, as the serving tests use), the packaged MiniLM model and FAISS;
the vector indexer and the candidates processor run as worker processes. The ML-100K
catalog's vectors are published as the content pipeline publishes them (the cached training
matrix: the same model and text); the new film is embedded here with the pipeline's functions.

Checked: a horror fan's list has no trace of a film that does not exist yet; once the film is
indexed, a refresh command (what the invalidation processor sends) rebuilds the list with the
film from the `content` source, although the retriever never saw it; once it is removed from
the index, the next refresh drops it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from streamrec.candidates.state import HISTORY
from streamrec.infra.settings import Settings
from streamrec.models.content import content_vectors
from streamrec.models.embedder import Embedder, content_hash, item_text
from streamrec.models.registry import ModelRegistry
from streamrec.models.retriever import RetrieverModel
from streamrec.streams import codecs
from streamrec.streams.producer import bulk_producer, flush, latency_producer, produce_event
from streamrec.streams.sources.movielens import load_items
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import (
    CACHE_INVALIDATIONS,
    CATALOG_ITEMS,
    CATALOG_VECTORS,
    EVENTS_INTERACTIONS,
    CatalogItem,
    Interaction,
    ItemVector,
    RefreshCommand,
    candidate_codec,
)
from streamrec.topics.stores import USER_CANDIDATES, CandidateList
from streamrec.vectors import IndexReader
from tests.kafka_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NEW_FILM = CatalogItem(
    item_id="900001",
    title="The Haunting of Blackwood Asylum",
    year=2026,
    genres=["Horror"],
    description="A slasher stalks the patients of a haunted asylum; ghosts, blood and terror.",
)
FAN = "horror-fan"


@dataclass
class World:
    settings: Settings
    embedder: Embedder
    reader: IndexReader
    indexer: WorkerProcess
    candidates: WorkerProcess
    horror: list[str]


def _retriever(settings: Settings) -> Path:
    """The cached test model's retriever (trained on first use, reused afterwards)."""
    from streamrec.models.train import train

    base = Settings()
    cache = base.with_overrides(stack={"state_dir": base.data.cache_dir / "test-ranker"})
    return train(cache, retriever_epochs=1, ranker_epochs=1).retriever.path


def _install(settings: Settings, source: Path) -> str:
    registry = ModelRegistry(settings)
    shutil.copytree(source, registry.kind_dir("retriever") / source.name)
    registry.promote("retriever", source.name)
    return source.name


def _vector(embedder: Embedder, item: CatalogItem, vec=None) -> ItemVector:
    text = item_text(item)
    vec = embedder.embed([text])[0] if vec is None else vec
    return ItemVector(
        item_id=item.item_id,
        model_version=embedder.model_version,
        content_hash=content_hash(text, embedder.model_version),
        vector=codecs.vector_bytes(vec),
    )


def _wait_index(world: World, predicate, what: str) -> None:
    def check() -> bool:
        assert world.indexer.alive(), f"the vector indexer died; see {world.indexer.log}"
        world.reader.refresh()
        return world.reader.version is not None and predicate(world.reader)

    wait_for(check, 60, what)


@pytest.fixture(scope="module")
def world(isolated_stack: Settings, ml100k: Path) -> Iterator[World]:
    settings = isolated_stack.with_overrides(index={"snapshot_quiet_s": 0.5})
    _install(settings, _retriever(settings))
    embedder = Embedder(settings)
    catalog = load_items(ml100k)
    producer = bulk_producer(settings)
    for item, vec in zip(catalog, content_vectors(Settings(), catalog), strict=True):
        produce_event(producer, CATALOG_ITEMS, item)
        produce_event(producer, CATALOG_VECTORS, _vector(embedder, item, vec))
    flush(producer)
    horror = [i.item_id for i in catalog if i.genres == ["Horror"]][:5]
    indexer = WorkerProcess(settings, "vector-indexer").start()
    candidates = WorkerProcess(settings, "candidates", "t-candidates-new-items").start()
    try:
        w = World(settings, embedder, IndexReader(settings, poll_s=0), indexer, candidates, horror)
        _wait_index(w, lambda r: len(r) == len(catalog), "an index of the whole catalog")
        yield w
    finally:
        candidates.stop()
        indexer.stop()


def _candidates(settings: Settings) -> CandidateList | None:
    raw = redis.Redis.from_url(settings.redis_url).get(USER_CANDIDATES.key(user_id=FAN))
    return candidate_codec.decode(raw) if raw else None


def _rebuilt_since(world: World, since: datetime, last_item: str | None = None) -> CandidateList:
    store = redis.Redis.from_url(world.settings.redis_url)

    def ready() -> CandidateList | None:
        assert world.candidates.alive(), f"the candidates worker died; see {world.candidates.log}"
        if last_item and store.lindex(HISTORY.format(user_id=FAN), 0) != last_item.encode():
            return None
        c = _candidates(world.settings)
        return c if c and c.computed_at > since else None

    return wait_for(ready, 60, f"{FAN}'s candidates rebuilt")


def _refresh(settings: Settings) -> datetime:
    since = datetime.now(UTC)
    producer = latency_producer(settings)
    command = RefreshCommand(user_id=FAN, reason="vector", cause_ids=[NEW_FILM.item_id])
    produce_event(producer, CACHE_INVALIDATIONS, command)
    flush(producer)
    return since


def test_a_film_added_after_training_reaches_a_fans_list_from_the_index(world: World):
    settings = world.settings
    since = datetime.now(UTC)
    producer = latency_producer(settings)
    for n, item in enumerate(world.horror):
        ts = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
        event = Interaction(
            event_id=f"{FAN}-{n}", user_id=FAN, item_id=item, kind="rating", rating=5, ts=ts
        )
        produce_event(producer, EVENTS_INTERACTIONS, event)
    flush(producer)
    before = _rebuilt_since(world, since, world.horror[-1])
    assert any("content" in c.sources for c in before.items)
    assert NEW_FILM.item_id not in {c.item_id for c in before.items}

    # The content pipeline's output for a new film: its MiniLM vector on catalog.vectors.
    produce_event(producer, CATALOG_ITEMS, NEW_FILM)
    produce_event(producer, CATALOG_VECTORS, _vector(world.embedder, NEW_FILM))
    flush(producer)
    _wait_index(world, lambda r: NEW_FILM.item_id in r, "a snapshot holding the new film")
    after = _rebuilt_since(world, _refresh(settings))
    found = {c.item_id: c for c in after.items}
    assert NEW_FILM.item_id in found, "the new film is not among the fan's candidates"
    assert "content" in found[NEW_FILM.item_id].sources
    # The retriever was trained without it: the live index is what found it.
    promoted = ModelRegistry(settings).promoted("retriever")
    assert NEW_FILM.item_id not in RetrieverModel.load(promoted.path, "cpu").table.ids

    # Removed from the catalog (a tombstone): gone from the index, then from the list.
    producer.produce(CATALOG_VECTORS.name, key=NEW_FILM.item_id.encode(), value=None)
    flush(producer)
    _wait_index(world, lambda r: NEW_FILM.item_id not in r, "a snapshot without the new film")
    gone = _rebuilt_since(world, _refresh(settings))
    assert NEW_FILM.item_id not in {c.item_id for c in gone.items}
    assert any("content" in c.sources for c in gone.items)
