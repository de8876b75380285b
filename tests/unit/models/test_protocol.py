"""The evaluation protocol: per-user time split and the ranking metrics."""

import math

import numpy as np
import pandas as pd

from streamrec.models.dataset import time_split
from streamrec.models.evaluate import ranking_metrics


def test_each_users_events_split_80_10_10_in_time_order():
    rows = []
    for u, n in (("a", 20), ("b", 30)):
        # written out of order: the split must sort by (ts, seq)
        for i in reversed(range(n)):
            rows.append((u, f"{u}{i}", 3.0, 1000 + i, i))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "ts", "seq"])
    split = time_split(events, cold_share=0.0, seed=1)
    for u, n in (("a", 20), ("b", 30)):
        tr = split.train[split.train.user_id == u]
        va = split.valid[split.valid.user_id == u]
        te = split.test[split.test.user_id == u]
        assert (len(tr), len(va), len(te)) == (
            int(n * 0.8),
            int(n * 0.9) - int(n * 0.8),
            n - int(n * 0.9),
        )
        assert tr.ts.max() < va.ts.min() and va.ts.max() < te.ts.min()


def test_cold_start_users_are_held_out_entirely():
    rows = [(str(u), f"i{i}", 3.0, i, i) for u in range(20) for i in range(20)]
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "ts", "seq"])
    split = time_split(events, cold_share=0.1, seed=3)
    cold = set(split.cold.user_id)
    assert len(cold) == 2
    assert not cold & (
        set(split.train.user_id) | set(split.valid.user_id) | set(split.test.user_id)
    )
    assert split.cold.groupby("user_id").size().eq(20).all()
    assert set(time_split(events, 0.1, 3).cold.user_id) == cold  # seeded


def test_metrics_match_their_definitions():
    top = np.array([[5, 1, 7, *range(100, 117)], list(range(200, 220))])
    targets = [np.array([1, 9]), np.array([219])]
    m = ranking_metrics(top, targets)
    ndcg_u1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    ndcg_u2 = (1 / math.log2(21)) / 1.0
    assert math.isclose(m.ndcg_20, (ndcg_u1 + ndcg_u2) / 2)
    assert math.isclose(m.recall_20, (0.5 + 1.0) / 2)
    assert m.hr_10 == 0.5  # user 2's hit is at rank 20
    assert m.users == 2
