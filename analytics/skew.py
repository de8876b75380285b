"""Train/serve skew of the ranker's inputs: PSI per feature between training and serving.

Responsibilities:
- `SkewSample`: one serving process's counts of the features it ranked with, in the bins of
  the promoted version's training profile (`models/feature_profile.py`); the value of its
  field in the Redis hash `streamrec:skew:{version}` (`skew_key`), one field per process;
- `merge`: every process's counts of one version, summed (counts merge exactly);
- `psi` and `check`: the population stability index of each feature,
  PSI = sum over bins of (s - t) * ln(s / t), with t the training share and s the serving
  share, each floored at `SHARE_FLOOR` so an empty bin does not make it infinite; judged
  `ok` below `warn`, `warn` below `drift`, `drift` from there; `too few samples` below
  `min_samples` serving rows (a handful of requests says nothing). Pure functions;
- `render`: the table `streamrec report` and `streamrec models skew-report` print.

Why PSI over the training deciles: ADR 0131.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from streamrec.models.feature_profile import FeatureProfile
from streamrec.topics.base import utcnow

KEY_PREFIX = "streamrec:skew:"
SHARE_FLOOR = 1e-4
Verdict = Literal["ok", "warn", "drift", "too few samples"]


def skew_key(version: str) -> str:
    """Redis hash of one ranker version's serving samples, one field per serving process."""
    return f"{KEY_PREFIX}{version}"


class SkewSample(BaseModel):
    """One serving process's feature counts for one ranker version, in its profile's bins."""

    version: str
    worker: str = ""
    updated_at: datetime = Field(default_factory=utcnow)
    batches: int = Field(0, description="sampled batches")
    rows: int = Field(0, description="(user, candidate) pairs counted")
    counts: dict[str, list[int]] = Field(default_factory=dict, description="feature -> per bin")


class FeatureSkew(BaseModel):
    name: str
    psi: float | None = Field(description="None when there are too few samples to judge")
    verdict: Verdict
    samples: int
    bins: int


class SkewReport(BaseModel):
    """The skew of one ranker version's serving inputs against its training profile."""

    version: str | None
    status: Literal["checked", "no ranker", "no profile", "no samples"]
    workers: int = 0
    batches: int = 0
    warn: float
    drift: float
    min_samples: int
    features: list[FeatureSkew] = Field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        return [f.name for f in self.features if f.verdict == "drift"]

    @property
    def warned(self) -> list[str]:
        return [f.name for f in self.features if f.verdict == "warn"]


def merge(samples: Iterable[SkewSample], version: str) -> SkewSample:
    """The sum of the processes' counts for `version` (others are ignored; a feature whose
    bin count disagrees with the first seen, from a different profile, is left out)."""
    total = SkewSample(version=version, worker="*")
    for s in samples:
        if s.version != version:
            continue
        total.batches += s.batches
        total.rows += s.rows
        for name, counts in s.counts.items():
            have = total.counts.get(name)
            if have is None:
                total.counts[name] = list(counts)
            elif len(have) == len(counts):
                total.counts[name] = [a + b for a, b in zip(have, counts, strict=True)]
    return total


def psi(expected: Sequence[float], observed: Sequence[int]) -> float:
    """PSI of observed counts against expected shares over the same bins."""
    t = np.maximum(np.asarray(expected, dtype=np.float64), SHARE_FLOOR)
    o = np.asarray(observed, dtype=np.float64)
    s = np.maximum(o / max(o.sum(), 1.0), SHARE_FLOOR)
    return float(np.sum((s - t) * np.log(s / t)))


def judge(value: float, warn: float, drift: float) -> Verdict:
    return "drift" if value >= drift else "warn" if value >= warn else "ok"


def check(
    profile: FeatureProfile | None,
    sample: SkewSample | None,
    version: str | None,
    warn: float,
    drift: float,
    min_samples: int,
    workers: int = 0,
) -> SkewReport:
    """Every profiled feature's PSI and verdict (pure: no I/O)."""
    base = SkewReport(
        version=version,
        status="checked",
        workers=workers,
        warn=warn,
        drift=drift,
        min_samples=min_samples,
    )
    if version is None:
        return base.model_copy(update={"status": "no ranker"})
    if profile is None:
        return base.model_copy(update={"status": "no profile"})
    if sample is None or sample.rows == 0:
        return base.model_copy(update={"status": "no samples"})
    features = []
    for f in profile.features:
        counts = sample.counts.get(f.name)
        if counts is None or len(counts) != len(f.shares):
            counts = [0] * len(f.shares)
        n = int(sum(counts))
        if n < min_samples:
            features.append(
                FeatureSkew(
                    name=f.name, psi=None, verdict="too few samples", samples=n, bins=len(counts)
                )
            )
            continue
        value = psi(f.shares, counts)
        features.append(
            FeatureSkew(
                name=f.name,
                psi=value,
                verdict=judge(value, warn, drift),
                samples=n,
                bins=len(counts),
            )
        )
    return base.model_copy(update={"features": features, "batches": sample.batches})


def render(report: SkewReport) -> str:
    """The skew section as plain text."""
    head = f"train/serve skew of ranker {report.version or '(none)'}"
    if report.status != "checked":
        reason = {
            "no ranker": "no ranker is promoted",
            "no profile": "this version has no training feature profile (trained before them)",
            "no samples": "no serving samples yet (serving.skew_sample 0, or no traffic)",
        }[report.status]
        return f"{head}: {reason}"
    lines = [
        f"{head}: {report.batches} sampled batches from {report.workers} worker(s); "
        f"PSI warn {report.warn:g}, drift {report.drift:g}, at least {report.min_samples} samples",
        "feature                     PSI   verdict           samples   bins",
    ]
    for f in report.features:
        value = "n/a" if f.psi is None else f"{f.psi:.4f}"
        lines.append(f"{f.name:<24} {value:>7}   {f.verdict:<15} {f.samples:>9}   {f.bins:>4}")
    return "\n".join(lines)
