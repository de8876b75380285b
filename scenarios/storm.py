"""The invalidation-storm scenario: `scenarios.invalidation_load` run as a scenario's modes.

The invalidation worker runs for real (`streamrec worker invalidation`) in each mode: naive
is `invalidation.mode` broadcast, StreamRec the default coalescing mode. The load is the
read path of `invalidation_load` (a response cache with a TTL in front of `cand:{user}`, a
candidate computation on each candidate-store miss and on each refresh), at a steady rate,
through four phases of the run: warm-up, steady, a popular new film, a model promotion.

Per second: the cache hit ratio and the computations (rankings on cache misses plus
candidate computations). The summary compares the viral and promotion phases with the
steady one: `hit_ratio_drop` is the steady hit ratio minus the worst second's after the
injections (the StreamRec goal: under 5 points), and the computations' 3 s peak against
steady plus the refresh bound (`refresh_rate_per_s`).

The run writes its own content-only candidate lists for every ML-100K user; the lists that
were there before are put back afterwards, and keys it created are removed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import redis

from streamrec.infra.redis_clients import sync_client
from streamrec.infra.settings import Settings
from streamrec.scenarios.invalidation_load import ModeResult, World, run_mode
from streamrec.scenarios.report import ModeRun, ScenarioResult
from streamrec.streams import datasets
from streamrec.streams.admin import TopicManager
from streamrec.topics import CATALOG_VECTORS, EVENTS_INTERACTIONS
from streamrec.topics.stores import USER_CANDIDATES

if TYPE_CHECKING:
    from streamrec.scenarios.runner import Mode, Scenario

# The invalidation benchmark's world (BENCHMARKS.md, "Invalidation"): the film reaches the
# users it would rank in their top 100, refreshes paced evenly at 8 commands/s.
STORM_SETTINGS: dict[str, object] = {
    "window_s": 1.0,
    "max_delay_s": 5.0,
    "await_index_s": 0.0,  # the scenario's index holds the item when it is published
    "refresh_rate_per_s": 8.0,
    "refresh_burst": 1,
    "neighbour_rank": 100,
}
RATE_PER_S = 250.0
TTL_S = 5.0
# Shares of the run: warm-up, steady, the new film, the promotion.
PHASES = (0.15, 0.3, 0.3, 0.25)


def _snapshot(client: redis.Redis) -> dict[bytes, bytes]:
    keys = list(client.scan_iter(match=USER_CANDIDATES.key(user_id="*"), count=1000))
    values = client.mget(keys) if keys else []
    return {k: v for k, v in zip(keys, values, strict=True) if v is not None}


def _restore(client: redis.Redis, saved: dict[bytes, bytes]) -> None:
    now = set(client.scan_iter(match=USER_CANDIDATES.key(user_id="*"), count=1000))
    pipe = client.pipeline(transaction=False)
    for key in now - set(saved):
        pipe.delete(key)
    for key, value in saved.items():
        pipe.set(key, value)
    pipe.execute()


def _world(settings: Settings, log: Callable[[str], None]) -> World:
    """ML-100K as the invalidation worker sees it on this stack: vectors already on
    catalog.vectors are reused, and tastes come from events.interactions when it has any
    (what the worker bootstraps from); whatever is missing is published first."""
    directory = datasets.fetch(settings)
    ends = {t.name: t.end_offsets for t in TopicManager(settings).list()}
    have_vectors = ends.get(CATALOG_VECTORS.name, 0) > 0
    logged = ends.get(EVENTS_INTERACTIONS.name, 0) > 0
    log("loading ML-100K" + ("" if have_vectors else ": embedding 1,682 items"))
    world = World.load(
        settings, directory, reuse_vectors=have_vectors, interactions_from_log=logged
    )
    if not have_vectors or not logged:
        world.publish(settings, interactions=not logged)
    return world


def _mode_run(mode: str, r: ModeResult, switched: dict[str, str], bound: float) -> ModeRun:
    series = [
        {
            "t": float(row["t"]),
            "requests": float(row["requests"]),
            "hit_ratio": float(row["hit_ratio"]),
            "computations": float(row["computations"]),
            "computations_smooth": float(row["computations_smooth"]),
        }
        for row in r.series
    ]
    h, c, a = r.hit_ratio, r.computations, r.amplification
    steady = h.get("steady", math.nan)
    worst = min(h.get("viral_min", math.nan), h.get("promotion_min", math.nan))
    peak = max(c.get("viral_peak_smooth", math.nan), c.get("promotion_peak_smooth", math.nan))
    summary = {
        "requests": float(sum(row["requests"] for row in series)),
        "hit_ratio_steady": steady,
        "hit_ratio_viral": h.get("viral", math.nan),
        "hit_ratio_promotion": h.get("promotion", math.nan),
        "hit_ratio_worst": worst,
        "hit_ratio_drop": steady - worst,
        "computations_steady": c.get("steady_mean", math.nan),
        "computations_peak": peak,
        "computations_bound": c.get("steady_mean", math.nan) + bound,
        "amplification_viral": a.get("viral", math.nan),
        "amplification_promotion": a.get("promotion", math.nan),
        "p99_ms": max(r.p99_ms.values(), default=math.nan),
        "commands": float(r.commands),
        "affected": float(r.affected),
        "reached": float(r.reached),
    }
    return ModeRun(mode=mode, series=series, summary=summary, settings=switched)


def run_storm(
    base: Settings,
    scenario: Scenario,
    modes: Sequence[Mode],
    duration_s: float,
    seed: int,
    log: Callable[[str], None] = print,
) -> ScenarioResult:
    from streamrec.scenarios.runner import mode_settings

    warmup, steady, viral, promotion = (share * duration_s for share in PHASES)
    result = ScenarioResult(
        name=scenario.name,
        title=scenario.title,
        description=scenario.description,
        metric=scenario.metric,
        better=scenario.better,
        parameters={
            "duration_s": f"{duration_s:g}",
            "seed": str(seed),
            "rate_per_s": f"{RATE_PER_S:g}",
            "cache_ttl_s": f"{TTL_S:g}",
            "phases_s": f"warm-up {warmup:.0f}, steady {steady:.0f}, new film {viral:.0f}, "
            f"promotion {promotion:.0f}",
        },
        runs=[],
        notes=[
            "The load's users are drawn by Zipf(1.0) over ML-100K's users by activity (the "
            "seed of `invalidation_load`, the same in both modes); `--seed` does not apply.",
            "computations = rankings on response-cache misses + candidate computations "
            "(vector searches on candidate misses and on refreshes).",
        ],
    )
    world: World | None = None
    for mode in modes:
        settings = mode_settings(base, scenario, mode)
        world = world or _world(settings, log)
        client = sync_client(settings)
        saved = _snapshot(client)
        try:
            log(f"[{mode}] invalidation worker in {settings.invalidation.mode} mode")
            r = run_mode(
                settings,
                world,
                settings.invalidation.mode,
                rate=RATE_PER_S,
                ttl_s=TTL_S,
                warmup_s=warmup,
                steady_s=steady,
                viral_s=viral,
                promotion_s=promotion,
                log=log,
            )
        finally:
            _restore(client, saved)
            client.close()
        switched = {
            f"{section}.{k}": str(v)
            for section, fields in scenario.settings.get(mode, {}).items()
            for k, v in fields.items()
        }
        run_ = _mode_run(mode, r, switched, settings.invalidation.refresh_rate_per_s)
        result.runs.append(run_)
        s = run_.summary
        log(
            f"[{mode}] hit ratio steady {s['hit_ratio_steady']:.1%}, worst second after "
            f"{s['hit_ratio_worst']:.1%}; computations {s['computations_steady']:.0f}/s steady, "
            f"{s['computations_peak']:.0f}/s peak (3 s)"
        )
    return result
