"""The serving worker's Prometheus metrics, on a registry of its own (one per worker core).

Responsibilities: declare every metric once, with the labels the dashboard groups by:
requests by channel/level/outcome, latency, admission sheds and queue depth, breaker state
per dependency (0 closed, 1 half-open, 2 open), batch sizes, cache results, model version
and swaps, shadow comparisons (overlap, scores, model time), the canary's share and
failures, impressions not delivered.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class ServingMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._children: dict[tuple[object, ...], Any] = {}
        self.requests = Counter(
            "serving_requests",
            "answers by channel and degradation level",
            ["channel", "level"],
            registry=r,
        )
        self.rejected = Counter(
            "serving_rejected",
            "requests refused (invalid, overloaded)",
            ["channel", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "serving_latency_seconds",
            "time to answer",
            ["channel"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.shed = Counter(
            "serving_shed", "requests shed by admission", ["priority", "reason"], registry=r
        )
        self.queued = Gauge(
            "serving_queued", "requests waiting for admission", ["priority"], registry=r
        )
        self.in_flight = Gauge("serving_in_flight", "requests being served", registry=r)
        self.loop_lag = Histogram(
            "serving_event_loop_lag_seconds",
            "how late the event loop runs (what a new request waits before any handler)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.breaker_state = Gauge(
            "serving_breaker_state", "0 closed, 1 half-open, 2 open", ["dependency"], registry=r
        )
        self.dependency_errors = Counter(
            "serving_dependency_errors",
            "failed dependency calls",
            ["dependency", "kind"],
            registry=r,
        )
        self.batch_size = Histogram(
            "serving_rank_batch_requests",
            "requests per ranking batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "serving_rank_batch_seconds",
            "model time per batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cache = Counter("serving_cache", "response cache results", ["result"], registry=r)
        self.model = Info("serving_model", "the ranker version serving", registry=r)
        self.model_swaps = Counter("serving_model_swaps", "hot swaps of the ranker", registry=r)
        self.shadow = Histogram(
            "serving_shadow_overlap",
            "top-k overlap of the shadow model with the served one",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=r,
        )
        self.explored = Counter(
            "serving_explored_items", "items put in answers by exploration", registry=r
        )
        self.shadow_score = Histogram(
            "serving_shadow_score",
            "median score of each compared request, served and shadow model",
            ["model"],
            buckets=(-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0),
            registry=r,
        )
        self.shadow_seconds = Histogram(
            "serving_shadow_seconds",
            "model time per compared batch, served and shadow model",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.canary_share = Gauge(
            "serving_canary_share", "share of users the canary ranker serves", registry=r
        )
        self.canary_errors = Counter(
            "serving_canary_errors",
            "canary batches that failed (those users answered by the promoted ranker)",
            registry=r,
        )
        self.impressions_failed = Counter(
            "serving_impressions_failed", "impressions the broker did not take", registry=r
        )
        self.dead_letters = Counter(
            "serving_dead_letters",
            "request-topic messages dead-lettered (malformed, unrepliable, failed)",
            registry=r,
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: prometheus_client checks and locks on every
        `labels` call (~1.5 us), and an answer makes six of them. Labelled children are
        never removed here, so the one made first stays the one counted."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found
