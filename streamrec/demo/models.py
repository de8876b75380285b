"""Demo steps of the models area: train (or reuse the model of the same data), promote, candidates.

- `train_and_promote`: `models.train.train` keys its versions by a hash of the data and the
  training settings, so a second demo on the same data reuses the published versions; both
  kinds are promoted (a `RegistryChange` on registry.changes) and the metric table printed.
- `candidates`: starts `streamrec worker candidates`, which reads the interaction log
  replayed earlier (co-visitation, histories), then sends a short genre session for a new
  user and prints their list with each candidate's sources.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from rich.table import Table

from streamrec.infra.redis_clients import sync_client
from streamrec.models.registry import ModelRegistry
from streamrec.models.report import metric_table
from streamrec.models.train import train
from streamrec.streams import datasets
from streamrec.streams.producer import flush, latency_producer, produce_event
from streamrec.streams.sources.movielens import load_items
from streamrec.topics import EVENTS_INTERACTIONS, REGISTRY_CHANGES, Interaction, candidate_codec
from streamrec.topics.stores import USER_CANDIDATES

if TYPE_CHECKING:
    from streamrec.demo import DemoContext

KINDS = ("retriever", "ranker")
DEMO_USER = "demo-sci-fi-fan"


def train_and_promote(ctx: DemoContext) -> None:
    s = ctx.settings
    t0 = time.monotonic()
    result = train(s)
    verb = "reused the models of the same data" if result.reused else "trained"
    ctx.console.print(
        f"{verb}: version {result.ranker.version} ({time.monotonic() - t0:.1f} s, "
        f"device {result.device or 'cpu'})"
    )
    ctx.console.print(metric_table(result.metrics, result.cold_start))
    registry = ModelRegistry(s)
    producer = latency_producer(s)
    for kind in KINDS:
        current = registry.promoted(kind)
        if current is None or current.version != result.ranker.version:
            produce_event(producer, REGISTRY_CHANGES, registry.promote(kind, result.ranker.version))
    flush(producer, 10.0)
    ctx.console.print(f"promoted: retriever and ranker {result.ranker.version}")
    ctx.state["model_version"] = result.ranker.version


def candidates(ctx: DemoContext) -> None:
    s = ctx.settings
    worker = ctx.start_worker("candidates")
    items = load_items(datasets.fetch(s, "ml-100k"))
    titles = {i.item_id: i.title for i in items}
    genres = {i.item_id: i.genres for i in items}
    session = [i.item_id for i in items if "Sci-Fi" in i.genres][:4]
    producer = latency_producer(s)
    start = datetime.now(UTC)
    for n, item in enumerate(session):
        produce_event(
            producer,
            EVENTS_INTERACTIONS,
            Interaction(
                event_id=f"demo-{start.timestamp():.0f}-{n}",
                user_id=DEMO_USER,
                item_id=item,
                kind="watch",
                ts=start + timedelta(seconds=n),
            ),
        )
    flush(producer, 10.0)
    store = sync_client(s)
    t0 = time.monotonic()
    lst = None
    # The worker first catches up with the whole log; a list built before it has read this
    # session's events holds only trending items, so wait for one that used the session.
    while time.monotonic() - t0 < 240:
        if not worker.alive():
            raise RuntimeError(f"the candidates worker died; see {worker.log}")
        raw = store.get(USER_CANDIDATES.key(user_id=DEMO_USER))
        if raw:
            lst = candidate_codec.decode(raw)
            if (
                lst.computed_at > start
                and lst.model_version == ctx.state.get("model_version")
                and any(src != "trending" for c in lst.items for src in c.sources)
            ):
                break
        time.sleep(0.2)  # polling Redis for the rebuilt list, bounded by the deadline
    if lst is None:
        ctx.console.print("[red]no candidates written within 240 s[/]")
        return
    ctx.console.print(
        f"{DEMO_USER} watched {', '.join(titles[i] for i in session)}; the processor "
        f"(after catching up with the log) wrote {len(lst.items)} candidates in "
        f"{time.monotonic() - t0:.1f} s, model {lst.model_version}:"
    )
    table = Table("#", "item", "genres", "score", "sources")
    for n, c in enumerate(lst.items[:12], start=1):
        table.add_row(
            str(n),
            titles.get(c.item_id, c.item_id),
            ", ".join(genres.get(c.item_id, [])),
            f"{c.score:.2f}",
            ", ".join(c.sources),
        )
    ctx.console.print(table)
    per_source: dict[str, int] = {}
    for c in lst.items:
        for src in c.sources:
            per_source[src] = per_source.get(src, 0) + 1
    ctx.console.print(
        "candidates per source: " + ", ".join(f"{k} {v}" for k, v in sorted(per_source.items()))
    )
