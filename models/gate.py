"""The evaluation gate: may a candidate model replace the promoted one?

Pure: both models' top-20 lists for the same fresh hold-out users (the newest interactions,
which neither trained on) go in, a verdict comes out. Per-user NDCG@20 and Recall@20 come
from `evaluate.ranking_metrics` (the project's one metric definition); a seeded bootstrap
over users gives a confidence interval of the paired difference candidate - promoted. The
candidate passes only if, for both metrics, the CI's lower bound is above `-margin`: it is
not worse by more than the margin, with the stated confidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from streamrec.models.evaluate import ranking_metrics

METRICS = ("ndcg_20", "recall_20")


class MetricComparison(BaseModel):
    candidate: float
    promoted: float
    diff: float
    ci_low: float
    ci_high: float
    passed: bool


class GateVerdict(BaseModel):
    passed: bool
    margin: float
    confidence: float
    samples: int
    seed: int
    users: int
    metrics: dict[str, MetricComparison]


def per_user(top: np.ndarray, targets: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Each user's NDCG@20 and Recall@20 (users without targets are dropped)."""
    rows = [ranking_metrics(top[i : i + 1], [t]) for i, t in enumerate(targets) if len(t)]
    return {m: np.asarray([getattr(r, m) for r in rows], dtype=float) for m in METRICS}


def gate(
    candidate_top: np.ndarray,
    promoted_top: np.ndarray,
    targets: Sequence[np.ndarray],
    margin: float = 0.01,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 42,
) -> GateVerdict:
    """`*_top`: (users, >=20) dense item indices best first, for the same users and targets."""
    if len(candidate_top) != len(promoted_top) or len(candidate_top) != len(targets):
        raise ValueError("candidate, promoted and targets must cover the same users")
    cand, prom = per_user(candidate_top, targets), per_user(promoted_top, targets)
    n = len(cand[METRICS[0]])
    if n == 0:
        raise ValueError("the hold-out has no user with targets")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))  # the same resamples for both metrics
    alpha = (1.0 - confidence) / 2
    out: dict[str, MetricComparison] = {}
    for m in METRICS:
        d = cand[m] - prom[m]
        boots = d[idx].mean(axis=1)
        lo, hi = np.quantile(boots, [alpha, 1.0 - alpha])
        out[m] = MetricComparison(
            candidate=float(cand[m].mean()),
            promoted=float(prom[m].mean()),
            diff=float(d.mean()),
            ci_low=float(lo),
            ci_high=float(hi),
            passed=bool(lo > -margin),
        )
    return GateVerdict(
        passed=all(c.passed for c in out.values()),
        margin=margin,
        confidence=confidence,
        samples=samples,
        seed=seed,
        users=n,
        metrics=out,
    )
