"""What the dashboard watches, collected every `analytics.dashboard_interval_s`.

Responsibilities:
- live workers from the Redis registry (`streams.metrics.registered_workers`), and the stop
  records of those that stopped cleanly (shown stopped, not red, unless seen live since);
- each live worker's /metrics, scraped and turned into rates over the last 10 s
  (events/s, failures/s, answers/s by level, p95 from histogram bucket deltas, cache hit
  ratio, open breakers, queue depth);
- consumer lag of every `streamrec-*` group: committed offsets vs end offsets through the
  Kafka AdminClient (works for every group, Faust or not, without touching the workers),
  also exported as `streamrec_consumer_lag` on the dashboard's own /metrics;
- store probes (Kafka, Redis; ClickHouse: a server DSN is pinged, the embedded chDB is
  healthy while its owner, the analytics sink, is live);
- while serving is live, the promoted ranker's train/serve skew
  (`analytics/skew_source.py`: its profile from the registry, the samples from Redis);
- the last `dashboard_history_s` of series for the plots: older points are dropped, and a
  line (or plot) with nothing left goes, so the page can say there is no data.

Nothing here raises into the web app: a failed probe is an observation (red or amber).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from streamrec.analytics.dashboard.health import (
    EdgeState,
    NodeState,
    Observation,
    WorkerObs,
    assess,
)
from streamrec.analytics.dashboard.topology import WORKER_NAMES, consumer_group
from streamrec.analytics.skew_source import read_skew
from streamrec.infra.redis_clients import sync_client
from streamrec.infra.settings import Settings, redact_url
from streamrec.streams import metrics
from streamrec.streams.errors import LagError
from streamrec.streams.lag import admin_client, consumer_lags

Samples = list[tuple[str, dict[str, str], float]]
RATE_WINDOW_S = 10.0
_DEGRADATION = "streamrec_degradation_total"
_CACHE = "streamrec_cache_requests_total"
_REQUEST_HIST = "streamrec_request_seconds"
_BATCH_HIST = "streamrec_processing_seconds"


class State(BaseModel):
    """What `/api/state` answers: the coloured map and the plotted series."""

    updated_at: float
    nodes: list[NodeState]
    edges: list[EdgeState]
    series: dict[str, dict[str, list[tuple[float, float]]]]
    workers: list[dict[str, Any]]


def parse(text: str) -> Samples:
    return [
        (s.name, dict(s.labels), float(s.value))
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


def _sum(samples: Samples, name: str, **match: str) -> float:
    return sum(
        v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in match.items())
    )


def histogram_p95(now: Samples, before: Samples | None, name: str) -> float | None:
    """p95 from the bucket counts added since `before` (None when nothing was observed)."""

    def buckets(samples: Samples) -> dict[float, float]:
        out: dict[float, float] = {}
        for n, lab, v in samples:
            if n == f"{name}_bucket":
                le = float(lab["le"])
                out[le] = out.get(le, 0.0) + v
        return out

    cur, prev = buckets(now), buckets(before or [])
    delta = sorted((le, c - prev.get(le, 0.0)) for le, c in cur.items())
    if not delta or delta[-1][1] <= 0:
        return None
    target = 0.95 * delta[-1][1]
    for le, count in delta:
        if count >= target:
            return le if le != float("inf") else max(x for x, _ in delta if x != float("inf"))
    return None


def prune(series: dict[str, dict[str, deque[tuple[float, float]]]], since: float) -> None:
    """Drop points before `since`, then the lines and plots left empty (a stopped worker's
    line ages out instead of lingering off the plot's left edge)."""
    for plot in list(series):
        lines = series[plot]
        for name in list(lines):
            line = lines[name]
            while line and line[0][0] < since:
                line.popleft()
            if not line:
                del lines[name]
        if not lines:
            del series[plot]


class Collector:
    """Keeps the latest `State`; `run()` refreshes it until cancelled."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cfg = settings.analytics
        self.admin = admin_client(settings)
        self.redis = sync_client(settings, socket_timeout=1.0)
        self.http = httpx.AsyncClient(timeout=1.5)
        self.seen: set[str] = set()
        self.last_live: dict[str, float] = {}  # name -> when this collector last saw it live
        # Recent scrapes per worker process: rates are taken over RATE_WINDOW_S, not one
        # interval, so a worker that commits once a second does not flicker to 0 ev/s.
        self._scrapes: dict[str, deque[tuple[float, Samples]]] = {}
        points = max(2, int(self.cfg.dashboard_history_s / self.cfg.dashboard_interval_s))
        self.series: dict[str, dict[str, deque[tuple[float, float]]]] = {}
        self._points = points
        self.state: State | None = None

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.cfg.dashboard_interval_s)

    async def refresh(self) -> State:
        now = time.time()
        registered = await asyncio.to_thread(self._registered_workers)
        beats = [b for b in registered if b.state != "stopped"]  # running or stuck
        stopped: dict[str, float] = {}
        for b in registered:
            if b.state == "stopped" and b.stopped_at is not None:
                stopped[b.name] = max(b.stopped_at, stopped.get(b.name, 0.0))
        groups = {b.name: b.group for b in beats if b.group}
        lags, kafka_ok = await asyncio.to_thread(self.consumer_lags, set(groups.values()))
        redis_ok = await asyncio.to_thread(self._ping_redis)
        scrapes = await asyncio.gather(*(self._scrape(b.metrics_url) for b in beats))
        workers: dict[str, WorkerObs] = {}
        by_name: dict[str, list[tuple[Any, Samples | None]]] = {}
        for beat, samples in zip(beats, scrapes, strict=True):
            by_name.setdefault(beat.name, []).append((beat, samples))
        live_keys = {f"{b.name}:{b.pid}" for b in beats}
        for gone in set(self._scrapes) - live_keys:
            del self._scrapes[gone]
        for name, entries in by_name.items():
            self.seen.add(name)
            self.last_live[name] = now
            workers[name] = self._observe(name, entries, now)
        for name in WORKER_NAMES:
            if name not in workers:
                ran = name in self.seen or consumer_group(name) in lags
                # A stop record older than the last live sighting is a previous run's: this
                # one died without one.
                clean = stopped.get(name)
                if clean is not None and clean <= self.last_live.get(name, 0.0):
                    clean = None
                workers[name] = WorkerObs(name=name, live=False, ever_ran=ran, stopped_at=clean)
        drift: list[str] = []
        warned: list[str] = []
        if redis_ok and "serving" in by_name:
            drift, warned = await asyncio.to_thread(self._skew)
        obs = Observation(
            workers=workers,
            lags=lags,
            groups=groups,
            kafka_ok=kafka_ok,
            stores=self._stores(workers, kafka_ok, redis_ok),
            skew_drift=drift,
            skew_warn=warned,
        )
        nodes, edges = assess(obs, self.cfg)
        self._record(now, workers, lags)
        self.state = State(
            updated_at=now,
            nodes=nodes,
            edges=edges,
            series={k: {s: list(p) for s, p in v.items()} for k, v in self.series.items()},
            workers=[b.model_dump() for b in beats],
        )
        return self.state

    def _registered_workers(self) -> list[metrics.WorkerBeat]:
        try:
            return metrics.registered_workers(self.settings)
        except redis.RedisError:
            return []

    def _skew(self) -> tuple[list[str], list[str]]:
        """(drifted, warned) features of the promoted ranker; none when unreadable."""
        try:
            report = read_skew(self.settings, self.redis)
        except (redis.RedisError, OSError, ValueError):
            return [], []
        return report.drifted, report.warned

    def _ping_redis(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    async def _scrape(self, url: str) -> Samples | None:
        try:
            response = await self.http.get(url)
            response.raise_for_status()
            return parse(response.text)
        except (httpx.HTTPError, ValueError):
            return None

    def _observe(
        self, name: str, entries: list[tuple[Any, Samples | None]], now: float
    ) -> WorkerObs:
        events = failed = queue = redelivered = 0.0
        stuck = next((b.reason or "no progress" for b, _ in entries if b.state == "stuck"), None)
        p95s: dict[str, float] = {}
        levels: dict[str, float] = {}
        hits = lookups = 0.0
        breakers: list[str] = []
        scrape_ok = True
        for beat, samples in entries:
            if samples is None:
                scrape_ok = False
                continue
            key = f"{name}:{beat.pid}"
            history = self._scrapes.setdefault(key, deque())
            while history and now - history[0][0] > RATE_WINDOW_S:
                history.popleft()
            prev_t, prev = history[0] if history else (None, None)
            history.append((now, samples))
            if prev_t is not None and now > prev_t:
                dt = now - prev_t

                def rate(
                    metric: str, cur: Samples = samples, old: Samples = prev, **match: str
                ) -> float:
                    delta = _sum(cur, metric, **match) - _sum(old, metric, **match)
                    return max(0.0, delta) / dt  # noqa: B023 - called in this iteration only

                events += rate("streamrec_events_processed_total")
                failed += rate("streamrec_events_failed_total")
                redelivered += rate("streamrec_events_redelivered_total")
                for level in {lab["level"] for n, lab, _ in samples if n == _DEGRADATION}:
                    levels[level] = levels.get(level, 0.0) + rate(_DEGRADATION, level=level)
                hits += rate(_CACHE, result="hit")
                lookups += rate(_CACHE)
                for kind, hist in (("request", _REQUEST_HIST), ("batch", _BATCH_HIST)):
                    p95 = histogram_p95(samples, prev, hist)
                    if p95 is not None:
                        p95s[kind] = max(p95, p95s.get(kind, 0.0))
            breakers += [
                lab.get("dependency", "?")
                for n, lab, v in samples
                if n == "streamrec_breaker_state" and v >= metrics.BREAKER_OPEN
            ]
            queue += _sum(samples, "streamrec_queue_depth")
        kind = "request" if "request" in p95s else "batch"
        return WorkerObs(
            name=name,
            live=True,
            ever_ran=True,
            scrape_ok=scrape_ok,
            pids=[b.pid for b, _ in entries],
            events_per_s=events + sum(levels.values()),  # serving: answers/s
            failed_per_s=failed,
            p95_s=p95s.get(kind),
            p95_kind=kind,
            breakers_open=breakers,
            queue_depth=queue,
            levels_per_s=levels,
            cache_hit_ratio=hits / lookups if lookups else None,
            redelivered_per_s=redelivered,
            stuck=stuck,
        )

    def consumer_lags(
        self, extra: set[str] | None = None
    ) -> tuple[dict[str, dict[str, int]], bool]:
        """group -> topic -> lag for every `streamrec-*` group and the live workers' groups,
        and whether Kafka answered."""
        try:
            lags = consumer_lags(self.admin)
            missing = sorted((extra or set()) - set(lags))
            if missing:
                lags.update(consumer_lags(self.admin, groups=missing))
        except LagError:
            return {}, False
        for group, by_topic in lags.items():
            for topic, lag in by_topic.items():
                metrics.CONSUMER_LAG.labels(topic, group).set(lag)
        return lags, True

    def _stores(
        self, workers: dict[str, WorkerObs], kafka_ok: bool, redis_ok: bool
    ) -> dict[str, tuple[str, str]]:
        dsn = self.settings.clickhouse_dsn
        if dsn.startswith("chdb://"):
            owner = workers.get("analytics-sink")
            ch = (
                ("ok", "embedded, sink owns it")
                if owner and owner.live
                else (
                    "idle",
                    "embedded (sink not running)",
                )
            )
        else:
            from streamrec.infra.clickhouse import ping

            ok, detail = ping(dsn)
            ch = ("ok" if ok else "down", detail)
        index = workers.get("vector-indexer")
        return {
            "kafka": ("ok", self.settings.kafka_bootstrap) if kafka_ok else ("down", "unreachable"),
            "redis": (
                ("ok", redact_url(self.settings.redis_url)) if redis_ok else ("down", "unreachable")
            ),
            "clickhouse": ch,
            "index": ("ok", "snapshots") if index and index.live else ("idle", "snapshots"),
        }

    def _record(
        self, now: float, workers: dict[str, WorkerObs], lags: dict[str, dict[str, int]]
    ) -> None:
        def add(plot: str, name: str, value: float) -> None:
            line = self.series.setdefault(plot, {}).setdefault(name, deque(maxlen=self._points))
            line.append((round(now, 1), round(value, 3)))

        for name, w in workers.items():
            if w.live:
                add("events per second", name, w.events_per_s)
                if w.p95_s is not None:
                    add("p95 latency (ms)", name, w.p95_s * 1000)
                for level, per_s in w.levels_per_s.items():
                    add("answers per second by level", level, per_s)
                if w.redelivered_per_s:
                    add("redelivered per second", name, w.redelivered_per_s)
        for group, by_topic in lags.items():
            add("consumer lag", group.removeprefix("streamrec-"), float(sum(by_topic.values())))
        prune(self.series, now - self.cfg.dashboard_history_s)

    async def close(self) -> None:
        await self.http.aclose()
        self.redis.close()
