"""Demo steps of the features area: the session and trending processors around the replay.

- `start_processors` (before the replay): registers the Feast repo and starts the
  "session-features" and "trending" workers, so they consume while the replay produces;
- `report` (after the replay): waits until both have consumed the whole log, measures
  freshness on live events for a few seconds, and prints events processed, freshness p50/p99,
  the trending list and one user's features read back through Feast.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.table import Table

from streamrec.features import feast_store
from streamrec.features.errors import FeatureError
from streamrec.features.freshness import group_lag, measure_freshness
from streamrec.features.online import OnlineFeatures
from streamrec.infra.redis_clients import sync_client
from streamrec.processors import session_features, trending
from streamrec.streams.sources.movielens import GENRES
from streamrec.topics.stores import POPULAR

if TYPE_CHECKING:
    from streamrec.demo import DemoContext

SESSION_GROUP = f"streamrec-{session_features.NAME}"
TRENDING_GROUP = f"streamrec-{trending.NAME}"
DEMO_USER = "405"  # ML-100K's most active user


def start_processors(ctx: DemoContext) -> None:
    names = feast_store.apply(ctx.settings)
    ctx.console.print(f"Feast: {len(names)} objects applied ({', '.join(names[-3:])} ...)")
    ctx.state["features_t0"] = time.monotonic()
    for name in (session_features.NAME, trending.NAME):
        ctx.start_worker(name)
    ctx.console.print("started workers: session-features, trending (they consume the replay)")


def report(ctx: DemoContext) -> None:
    settings = ctx.settings
    store = sync_client(settings)
    t0 = time.monotonic()
    deadline = t0 + 150
    while True:
        lags = {g: group_lag(settings, g) for g in (SESSION_GROUP, TRENDING_GROUP)}
        if not any(lags.values()):
            break
        for w in ctx.workers:
            if w.name in (session_features.NAME, trending.NAME) and not w.alive():
                raise FeatureError(f"worker {w.name} died; see {w.log}")
        if lags[SESSION_GROUP] == 0 and time.monotonic() > deadline:
            # Trending is a fallback list: report its lag rather than fail the demo on it.
            ctx.console.print(f"trending still {lags[TRENDING_GROUP]:,} events behind")
            break
        if time.monotonic() > deadline + 60:
            raise FeatureError(f"the session processor still lags by {lags} after 210 s")
        time.sleep(0.5)  # polling the groups' committed offsets, bounded by the deadline
    elapsed = time.monotonic() - ctx.state.get("features_t0", t0)
    s_stats = {
        k.decode(): int(v)
        for k, v in store.hgetall(session_features.stats_key(SESSION_GROUP)).items()
    }
    t_stats = {
        k.decode(): int(v) for k, v in store.hgetall(trending.stats_key(TRENDING_GROUP)).items()
    }
    seen = sum(s_stats.get(k, 0) for k in ("accepted", "duplicate", "too_late", "dead"))
    ctx.console.print(
        f"session-features: {seen:,} events processed ({s_stats.get('accepted', 0):,} accepted, "
        f"{s_stats.get('duplicate', 0):,} duplicates, {s_stats.get('too_late', 0):,} too late, "
        f"{s_stats.get('dead', 0):,} dead-lettered); trending: {t_stats.get('counted', 0):,} "
        f"counted; caught up {elapsed:.0f} s after the workers started"
    )
    items = list({m.decode() for m in store.zrange(POPULAR.key(window="24h"), 0, -1)}) or ["50"]
    fr = measure_freshness(settings, items, rate=500, seconds=4, grace_s=15)
    ctx.state["freshness"] = fr
    ctx.console.print(
        f"freshness (produce -> visible through Feast), {fr.probes} probes at "
        f"{fr.rate:,.0f} events/s: p50 {fr.p50_ms:.0f} ms, p99 {fr.p99_ms:.0f} ms, "
        f"max {fr.max_ms:.0f} ms"
    )
    table = Table("window", "top items (item: count)")
    for window in ("1h", "24h"):
        top = store.zrevrange(POPULAR.key(window=window), 0, 4, withscores=True)
        table.add_row(window, ", ".join(f"{m.decode()}: {int(s)}" for m, s in top))
    ctx.console.print(table)
    user = OnlineFeatures(settings).get_user_features([DEMO_USER])[DEMO_USER]
    affinity = sorted(zip(GENRES, user.genre_affinity, strict=False), key=lambda g: -g[1])[:3]
    table = Table("feature", f"user {DEMO_USER} (through Feast)")
    table.add_row("last items", ", ".join(user.last_items))
    table.add_row("session", f"{user.session_interactions} events, {user.session_length_s:.0f} s")
    table.add_row("genre affinity (top 3)", ", ".join(f"{g} {v:.2f}" for g, v in affinity))
    table.add_row("total / mean rating", f"{user.total_interactions} / {user.mean_rating:.2f}")
    table.add_row("top genres", ", ".join(user.top_genres))
    ctx.console.print(table)
