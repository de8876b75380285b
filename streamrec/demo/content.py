"""Demo step of the content pipeline: embed ML-100K, index it, show nearest neighbours."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.table import Table

from streamrec.infra.redis_clients import sync_client
from streamrec.processors.content_pipeline import stats_key
from streamrec.processors.vector_indexer import status_key
from streamrec.streams import datasets
from streamrec.streams.admin import TopicManager
from streamrec.streams.errors import ReplayError
from streamrec.streams.sources.movielens import load_items
from streamrec.topics import CATALOG_ITEMS
from streamrec.vectors import IndexReader

if TYPE_CHECKING:
    from streamrec.demo import DemoContext

TITLES = ("Toy Story", "Star Wars")


def _wait(
    ctx: DemoContext, what: str, done: Callable[[], object], timeout_s: float = 240.0
) -> None:
    t0 = time.monotonic()
    while not done():
        if any(not w.alive() for w in ctx.workers):
            dead = next(w for w in ctx.workers if not w.alive())
            raise ReplayError(f"worker {dead.name} died; see {dead.log}")
        if time.monotonic() - t0 > timeout_s:
            raise ReplayError(f"timed out waiting for {what}")
        time.sleep(0.1)  # polling the workers' progress in Redis


def embed_and_index(ctx: DemoContext) -> None:
    settings = ctx.settings
    store = sync_client(settings)
    run = uuid.uuid4().hex[:8]
    group, indexer_group = f"demo-content-{run}", f"demo-indexer-{run}"
    stats, status = stats_key(group), status_key(indexer_group)
    target = next(
        t.end_offsets for t in TopicManager(settings).list() if t.name == CATALOG_ITEMS.name
    )
    ctx.start_worker("content-pipeline", group)
    ctx.start_worker("vector-indexer", indexer_group)
    _wait(ctx, "the embedding model to load", lambda: store.hget(stats, "model_version"))
    t0 = time.monotonic()
    _wait(ctx, "the catalog to be embedded", lambda: int(store.hget(stats, "seen") or 0) >= target)
    seconds = time.monotonic() - t0
    counts = {k.decode(): v.decode() for k, v in store.hgetall(stats).items()}
    embedded = int(counts.get("embedded", 0))
    rate = f"{embedded / seconds:,.0f} items/s" if embedded else "nothing to embed"
    ctx.console.print(
        f"content pipeline ({counts.get('model_version')} on {counts.get('device')}): "
        f"{target:,} catalog messages, {embedded:,} embedded in {seconds:.1f} s ({rate}), "
        f"{counts.get('skipped', 0)} unchanged (content hash), {counts.get('removed', 0)} "
        f"removed, {counts.get('dead', 0)} dead-lettered"
    )

    def decided() -> bool:
        outcome = (store.hget(status, "outcome") or b"").decode()
        return outcome.startswith(("published", "unchanged"))

    _wait(ctx, "the index snapshot", decided)
    reader = IndexReader(settings, poll_s=0)
    snap = reader.snapshot.info
    ctx.console.print(
        f"vector index {snap.version}: {snap.item_count:,} items, {snap.index_kind}, "
        f"{snap.dim}-d, recall@10 vs exact {snap.recall:.3f} "
        f"({(store.hget(status, 'outcome') or b'').decode()})"
    )
    ctx.state["index_version"] = snap.version
    items = {i.item_id: i for i in load_items(datasets.fetch(settings, "ml-100k"))}
    by_title = {i.title: i for i in items.values()}
    for title in TITLES:
        item = by_title[title]
        if item.item_id not in reader:
            ctx.console.print(f"{title}: not in the index (removed from the catalog)")
            continue
        table = Table("score", "nearest to " + f"{item.title} ({item.year})", "genres")
        for other, score in reader.similar(item.item_id, 5):
            neighbour = items.get(other)
            name = f"{neighbour.title} ({neighbour.year})" if neighbour else other
            table.add_row(f"{score:.3f}", name, ", ".join(neighbour.genres) if neighbour else "")
        ctx.console.print(table)
