"""Demo step of LLM enrichment: the local provider at 500 requests/min, the enricher, and what
serving shows meanwhile.

It starts the local provider (500/min, 200 ms-2 s latency, the issue's figures) and the
`llm-enricher` worker, which requests a description for every ML-100K item (none has one)
and takes explanation requests for the demo users' top items (first: higher priority).
After `_HEALTHY_S` seconds the provider squeezes its quota to 100/min for `_SQUEEZE_S`
seconds (as a provider shared with other tenants does), so the report shows 429s absorbed:
Retry-After honoured, nothing lost but time. Serving keeps answering throughout with the
cached explanation or a template. Both processes stop at the end of the step; the results
stay in Redis and on llm.enrich.results.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import httpx
import redis
from rich.table import Table

from streamrec.infra.processes import free_port
from streamrec.infra.redis_clients import sync_client
from streamrec.llm.keys import description_key, explanation_key
from streamrec.llm.local_provider import LocalProvider
from streamrec.llm.requests import explanation_request
from streamrec.processors.llm_enricher import stats_key
from streamrec.serving.explanations import ItemFacts, WatchedItem, explain_items_sync
from streamrec.streams import datasets
from streamrec.streams.producer import bulk_producer, flush, produce_event
from streamrec.streams.sources.movielens import load_items
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import LLM_ENRICH_REQUESTS, EnrichResult
from streamrec.topics.stores import LLM_RESULT

if TYPE_CHECKING:
    from streamrec.demo import DemoContext

_HEALTHY_S = 18.0
_SQUEEZE_S = 8.0
_USERS = [str(u) for u in range(1, 21)]


def _top_items(ctx: DemoContext, fallback: list[str]) -> dict[str, list[str]]:
    """The demo users' top items from the running serving worker, else popular items."""
    url = ctx.state.get("serving_url")
    out: dict[str, list[str]] = {}
    for user in _USERS:
        try:
            r = httpx.get(f"{url}/v1/users/{user}/recommendations", params={"k": 10}, timeout=5)
            out[user] = [it["item_id"] for it in r.json()["items"]]
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            out[user] = fallback[:10]
    return out


def enrich(ctx: DemoContext) -> None:
    port = free_port()
    settings = ctx.settings.with_overrides(
        llm={
            "base_url": f"http://127.0.0.1:{port}/v1",
            "local_port": port,
            "local_limit": 500,
            "local_window_s": 60.0,
        }
    )
    items = load_items(datasets.fetch(settings, "ml-100k"))
    titles = {i.item_id: i.title for i in items}
    genres = {i.item_id: tuple(i.genres) for i in items}
    store = sync_client(settings)
    group = f"demo-llm-{uuid.uuid4().hex[:8]}"
    key = stats_key(group)
    with LocalProvider(settings) as provider:
        ctx.console.print(
            f"local LLM provider at {provider.base_url}: 500 requests/min, 200 ms-2 s latency"
        )
        worker = WorkerProcess(settings, "llm-enricher", group).start()
        ctx.workers.append(worker)
        tops = _top_items(ctx, [i.item_id for i in items])
        producer = bulk_producer(settings)
        for user, item_ids in tops.items():
            because = titles.get(item_ids[-1], "a film you rated") if item_ids else ""
            for item_id in item_ids:
                request = explanation_request(
                    user,
                    item_id,
                    title=titles.get(item_id, item_id),
                    because=because,
                    genres=list(genres.get(item_id, ())),
                    priority=1.0,  # above the catalog's descriptions (priority 0)
                    ttl_s=600,
                )
                produce_event(producer, LLM_ENRICH_REQUESTS, request)
        flush(producer)
        ctx.console.print(
            f"requested {sum(map(len, tops.values()))} explanations for {len(tops)} users; "
            f"the enricher requests descriptions for the {len(items):,} catalog items itself"
        )
        t0 = time.monotonic()
        squeezed = False
        while time.monotonic() - t0 < _HEALTHY_S + _SQUEEZE_S:
            if not worker.alive():
                raise RuntimeError(f"the enricher died; see {worker.log}")
            if not squeezed and time.monotonic() - t0 >= _HEALTHY_S:
                provider.admin.configure(limit=100)
                squeezed = True
                ctx.console.print("the provider squeezes its quota to 100/min (429 + Retry-After)")
            time.sleep(0.5)  # the demo runs for a fixed time; the enricher works meanwhile
        stats = {k.decode(): int(v) for k, v in store.hgetall(key).items()}
        log = provider.admin.log()
        worker.stop()

    described = sum(
        bool(store.exists(LLM_RESULT.key(key=description_key(i.item_id)))) for i in items
    )
    table = Table("what", "count")
    table.add_row("requests taken in", f"{stats.get('received', 0):,}")
    table.add_row("items described by the LLM", f"{described:,} of {len(items):,}")
    table.add_row("explanations written", f"{stats.get('enriched_explanation', 0):,}")
    table.add_row("provider calls (its own log)", f"{len(log):,}")
    table.add_row("429s absorbed", f"{stats.get('rate_limited', 0):,}")
    refused = [e.t for e in log if e.status == 429]
    if refused:
        # In-flight calls may land just after the first 429; then the shared pause holds.
        later = sum(e.t > min(refused) + 2.5 for e in log)
        table.add_row("calls during the Retry-After pause", str(later))
    table.add_row("still queued (bounded, by priority)", f"{stats.get('queue_depth', 0):,}")
    table.add_row("timeouts / breaker trips", f"{stats.get('timeouts', 0)} / "
                  f"{stats.get('breaker_trips', 0)}")  # fmt: skip
    ctx.console.print(table)

    served, llm, shown = _served(ctx, store, tops, titles, genres)
    ctx.console.print(shown)
    ctx.console.print(
        f"explanations served: {served} ({llm} the LLM's cached text, {served - llm} templates); "
        "serving never waited for the LLM"
    )


def _served(
    ctx: DemoContext,
    store: redis.Redis,
    tops: dict[str, list[str]],
    titles: dict[str, str],
    genres: dict[str, tuple[str, ...]],
) -> tuple[int, int, Table]:
    """Explanations as served: by the serving worker over HTTP when it runs, else by
    `serving.explanations` directly (the function the worker calls)."""
    url = ctx.state.get("serving_url")
    served = llm = 0
    picked = {"LLM (cached)": 0, "template": 0}
    shown = Table("user", "item", "explanation served", "source")
    for user, item_ids in tops.items():
        if url:
            r = httpx.get(f"{url}/v1/users/{user}/recommendations", params={"k": 10}, timeout=5)
            pairs = [(it["item_id"], it.get("explanation") or "") for it in r.json()["items"]]
        else:
            last = item_ids[-1]
            recent = [WatchedItem(last, titles.get(last, ""), genres.get(last, ()))]
            facts = {i: ItemFacts(genres.get(i, ())) for i in item_ids}
            got = explain_items_sync(store, user, item_ids, recent=recent, facts=facts)
            pairs = [(i, e.text) for i, e in got.items()]
        cached = store.mget([LLM_RESULT.key(key=explanation_key(user, i)) for i, _ in pairs])
        for (item_id, text), raw in zip(pairs, cached, strict=True):
            from_llm = (
                bool(raw) and bool(text) and text == EnrichResult.model_validate_json(raw).text
            )
            served += bool(text)
            llm += from_llm
            source = "LLM (cached)" if from_llm else "template"
            if picked[source] < 3:  # a few of each
                picked[source] += 1
                shown.add_row(user, titles.get(item_id, item_id), text, source)
    return served, llm, shown
