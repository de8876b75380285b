"""The shadow comparison, kept so it can be reported: agreement@k, both models' scores, latency.

Responsibilities:
- `ShadowRecorder`: what the shadow thread observes for each compared batch (the served and
  the shadow model's scores, each model's time for the batch), into bounded in-memory
  summaries: a histogram of agreement@k per request, and fixed-size uniform samples
  (reservoirs) of scores and of batch seconds per model; nothing per request leaves the
  process;
- `ShadowSummary`: one worker's summary, written to Redis every `serving.shadow_report_s` by
  the model manager's poller (one HSET per interval, never one per request), read back and
  merged by `streamrec models shadow-report` (`merge`, `render`).

Agreement@k of one request: |top-k of the served model ∩ top-k of the shadow| / k, with
k = min(`AGREEMENT_K`, candidates). The score samples hold every request's scores at evenly
spaced ranks (`SCORES_PER_REQUEST` of them), so a distribution of a whole candidate list is
kept, not only its head.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime

import numpy as np
from pydantic import BaseModel, Field

from streamrec.topics.base import utcnow

AGREEMENT_K = 20
SCORES_PER_REQUEST = 8
SAMPLE_SIZE = 2048
KEY_PREFIX = "streamrec:shadow:"


def shadow_key(shadow_version: str) -> str:
    """Redis hash of one shadow version's summaries, one field per serving process."""
    return f"{KEY_PREFIX}{shadow_version}"


def agreement_at_k(served: np.ndarray, shadow: np.ndarray, k: int = AGREEMENT_K) -> float | None:
    """The top-k overlap share of two score vectors over the same candidates (None if empty)."""
    k = min(k, len(served))
    if k == 0:
        return None
    top_a = np.argpartition(-served, k - 1)[:k] if k < len(served) else np.arange(k)
    top_b = np.argpartition(-shadow, k - 1)[:k] if k < len(shadow) else np.arange(k)
    return len(np.intersect1d(top_a, top_b, assume_unique=True)) / k


class _Reservoir:
    """A uniform sample of at most `size` values of a stream (Algorithm R)."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = size
        self.values: list[float] = []
        self.seen = 0
        self._rng = rng

    def add(self, values: Iterable[float]) -> None:
        for v in values:
            self.seen += 1
            if len(self.values) < self.size:
                self.values.append(float(v))
            else:
                j = int(self._rng.integers(self.seen))
                if j < self.size:
                    self.values[j] = float(v)


class ShadowSummary(BaseModel):
    """One serving process's comparison of a shadow version with the version it served."""

    served_version: str
    shadow_version: str
    worker: str = ""
    updated_at: datetime = Field(default_factory=utcnow)
    batches: int = 0
    requests: int = 0
    failures: int = Field(0, description="shadow batches that raised (nothing recorded)")
    agreement_sum: float = 0.0
    agreement_hist: list[int] = Field(
        default_factory=lambda: [0] * (AGREEMENT_K + 1),
        description="requests by round(agreement@k x 20): bucket i is agreement i/20",
    )
    served_scores: list[float] = Field(default_factory=list)
    shadow_scores: list[float] = Field(default_factory=list)
    served_seconds: list[float] = Field(default_factory=list, description="model s per batch")
    shadow_seconds: list[float] = Field(default_factory=list)


class ShadowRecorder:
    """Accumulates comparisons for one (served, shadow) pair; a new served version resets it.

    The shadow thread calls `observe`, the poller `snapshot`: a lock between them (held for
    the few list operations of one batch, never on the request path)."""

    def __init__(self, shadow_version: str, worker: str, seed: int = 0) -> None:
        self.shadow_version = shadow_version
        self.worker = worker
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        self.served_version = ""
        self._reset("")

    def _reset(self, served_version: str) -> None:
        self.served_version = served_version
        self.batches = self.requests = self.failures = 0
        self.agreement_sum = 0.0
        self.agreement_hist = [0] * (AGREEMENT_K + 1)
        self._scores = {m: _Reservoir(SAMPLE_SIZE, self._rng) for m in ("served", "shadow")}
        self._seconds = {m: _Reservoir(SAMPLE_SIZE, self._rng) for m in ("served", "shadow")}

    def observe(
        self,
        served_version: str,
        served: Sequence[np.ndarray],
        shadow: Sequence[np.ndarray],
        served_s: float,
        shadow_s: float,
    ) -> list[float]:
        """Record one compared batch; returns each request's agreement@k (for /metrics)."""
        agreements: list[float] = []
        with self._lock:
            if served_version != self.served_version:
                self._reset(served_version)
            self.batches += 1
            self._seconds["served"].add([served_s])
            self._seconds["shadow"].add([shadow_s])
            for a, b in zip(served, shadow, strict=True):
                agreement = agreement_at_k(a, b)
                if agreement is None:
                    continue
                self.requests += 1
                self.agreement_sum += agreement
                self.agreement_hist[round(agreement * AGREEMENT_K)] += 1
                agreements.append(agreement)
                step = max(1, len(a) // SCORES_PER_REQUEST)
                self._scores["served"].add(np.sort(a)[::step].tolist())
                self._scores["shadow"].add(np.sort(b)[::step].tolist())
        return agreements

    def failed(self) -> None:
        with self._lock:
            self.failures += 1

    def snapshot(self) -> ShadowSummary:
        with self._lock:
            return ShadowSummary(
                served_version=self.served_version,
                shadow_version=self.shadow_version,
                worker=self.worker,
                batches=self.batches,
                requests=self.requests,
                failures=self.failures,
                agreement_sum=self.agreement_sum,
                agreement_hist=list(self.agreement_hist),
                served_scores=list(self._scores["served"].values),
                shadow_scores=list(self._scores["shadow"].values),
                served_seconds=list(self._seconds["served"].values),
                shadow_seconds=list(self._seconds["shadow"].values),
            )


class Distribution(BaseModel):
    n: int
    mean: float | None
    p10: float | None
    p50: float | None
    p90: float | None
    p99: float | None


def distribution(values: Sequence[float]) -> Distribution:
    if not values:
        return Distribution(n=0, mean=None, p10=None, p50=None, p90=None, p99=None)
    arr = np.asarray(values, dtype=np.float64)
    p10, p50, p90, p99 = (float(q) for q in np.quantile(arr, [0.1, 0.5, 0.9, 0.99]))
    return Distribution(n=len(arr), mean=float(arr.mean()), p10=p10, p50=p50, p90=p90, p99=p99)


class ShadowReport(BaseModel):
    """The comparison of one shadow version with one served version, over every worker."""

    served_version: str
    shadow_version: str
    workers: int
    batches: int
    requests: int
    failures: int
    agreement_k: int = AGREEMENT_K
    agreement_mean: float | None
    agreement_hist: list[int]
    served_scores: Distribution
    shadow_scores: Distribution
    served_ms: Distribution = Field(description="served model's time per compared batch")
    shadow_ms: Distribution


def merge(summaries: Iterable[ShadowSummary]) -> list[ShadowReport]:
    """One report per (served, shadow) pair; the workers' samples are pooled (each is a
    uniform sample of its own worker's stream, so busier workers are under-weighted)."""
    groups: dict[tuple[str, str], list[ShadowSummary]] = {}
    for s in summaries:
        groups.setdefault((s.served_version, s.shadow_version), []).append(s)
    out = []
    for (served, shadow), group in sorted(groups.items()):
        requests = sum(s.requests for s in group)
        hist = [sum(col) for col in zip(*(s.agreement_hist for s in group), strict=True)]

        def pooled(field: str, scale: float = 1.0, g: list[ShadowSummary] = group) -> Distribution:
            return distribution([v * scale for s in g for v in getattr(s, field)])

        out.append(
            ShadowReport(
                served_version=served,
                shadow_version=shadow,
                workers=len(group),
                batches=sum(s.batches for s in group),
                requests=requests,
                failures=sum(s.failures for s in group),
                agreement_mean=sum(s.agreement_sum for s in group) / requests if requests else None,
                agreement_hist=hist,
                served_scores=pooled("served_scores"),
                shadow_scores=pooled("shadow_scores"),
                served_ms=pooled("served_seconds", 1000.0),
                shadow_ms=pooled("shadow_seconds", 1000.0),
            )
        )
    return out


def _fmt(d: Distribution, digits: int = 3) -> str:
    if d.n == 0:
        return "(none)"
    return (
        f"mean {d.mean:.{digits}f}  p10 {d.p10:.{digits}f}  p50 {d.p50:.{digits}f}  "
        f"p90 {d.p90:.{digits}f}  p99 {d.p99:.{digits}f}  (n {d.n})"
    )


def render(reports: Sequence[ShadowReport]) -> str:
    """What `streamrec models shadow-report` prints."""
    if not reports:
        return "no shadow comparisons recorded (serving.shadow_version unset, or no traffic)"
    lines: list[str] = []
    for r in reports:
        mean = "n/a" if r.agreement_mean is None else f"{r.agreement_mean:.3f}"
        lines += [
            f"shadow {r.shadow_version} beside served {r.served_version}: {r.requests} requests "
            f"in {r.batches} batches from {r.workers} worker(s), {r.failures} shadow failures",
            f"  agreement@{r.agreement_k}: mean {mean}",
            "  agreement histogram: "
            + "  ".join(
                f"{i / r.agreement_k:.2f}:{n}" for i, n in enumerate(r.agreement_hist) if n
            ),
            f"  scores served: {_fmt(r.served_scores)}",
            f"  scores shadow: {_fmt(r.shadow_scores)}",
            f"  model ms per batch served: {_fmt(r.served_ms, 2)}",
            f"  model ms per batch shadow: {_fmt(r.shadow_ms, 2)}",
            "",
        ]
    return "\n".join(lines).rstrip()
