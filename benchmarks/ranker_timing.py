"""Timing the ranker's inference API on 500 candidates (no stack needed, so it also runs on a
lent GPU machine): single-request latency and batched throughput."""

from __future__ import annotations

import time

import numpy as np

from streamrec.models.features import UserFeatures
from streamrec.models.ranker import RankerModel


def _sync(model: RankerModel) -> None:
    if str(getattr(model, "device", "cpu")).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def ranker_speed(model: RankerModel, batch: int = 32, rounds: int = 10) -> tuple[float, float]:
    """(p50 ms of one request of 500 candidates, candidates/s scored in batches of `batch`)."""
    user = UserFeatures(user_id="u", recent_items=[str(i) for i in range(1, 40)], n_interactions=39)
    cands = [str(i) for i in range(100, 600)]
    for _ in range(5):
        model.score(user, cands)
        model.score_batch([user] * batch, [cands] * batch)
    _sync(model)
    runs = []
    for _ in range(100):
        t = time.perf_counter()
        model.score(user, cands)
        runs.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    for _ in range(rounds):
        model.score_batch([user] * batch, [cands] * batch)
    _sync(model)
    per_s = rounds * batch * len(cands) / (time.perf_counter() - t)
    return float(np.percentile(runs, 50)), per_s
