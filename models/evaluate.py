"""The evaluation protocol and the four scorers it compares.

Responsibilities:
- full-ranking metrics: every item the user did not interact with in training is ranked;
  Recall@20 (hits / test items), NDCG@20 (binary relevance, ideal DCG over
  min(test items, 20)) and HR@10 (any hit in the top 10), averaged over users;
- the scorers: popularity (training counts), item-kNN co-visitation (cosine of item
  co-occurrence in training histories), two-tower alone, two-tower + ranker (the ranker
  re-scores the two-tower's top `ranker_depth`, the rest keep the two-tower order below);
- the cold-start protocol: held-out users, their first k interactions only, their next
  10 as targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel

from streamrec.models.features import UserFeatures
from streamrec.models.items import ItemTable
from streamrec.models.ranker import RankerModel

K_RECALL = 20
K_HR = 10
COLD_START_KS = (1, 3, 5)
COLD_START_TARGETS = 10


class Metrics(BaseModel):
    recall_20: float
    ndcg_20: float
    hr_10: float
    users: int


class Scorer(Protocol):
    name: str

    def scores(self, users: Sequence[UserFeatures]) -> np.ndarray:
        """(len(users), n_items + 1) scores by dense index; column 0 is ignored."""
        ...


class PopularityScorer:
    name = "popularity"

    def __init__(self, table: ItemTable) -> None:
        self.base = table.padded(table.popularity).astype(np.float32)

    def scores(self, users: Sequence[UserFeatures]) -> np.ndarray:
        return np.tile(self.base, (len(users), 1))


class CoVisitationScorer:
    """Item-kNN: items that co-occur in training histories, cosine-normalised, top-k kept."""

    name = "item-kNN co-visitation"

    def __init__(self, table: ItemTable, train: pd.DataFrame, neighbours: int = 100) -> None:
        self.table = table
        n = len(table) + 1
        users = {u: i for i, u in enumerate(train["user_id"].unique())}
        rows = train["user_id"].map(users).to_numpy()
        cols = table.indices_or_zero(train["item_id"].tolist())
        x = np.zeros((len(users), n), dtype=np.float32)
        x[rows, cols] = 1.0
        x[:, 0] = 0.0
        co = x.T @ x
        norms = np.sqrt(np.diag(co)).clip(min=1.0)
        sim = co / norms[:, None] / norms[None, :]
        np.fill_diagonal(sim, 0.0)
        if neighbours < n:
            cut = np.partition(sim, -neighbours, axis=1)[:, -neighbours][:, None]
            sim[sim < cut] = 0.0
        self.sim = sim

    def scores(self, users: Sequence[UserFeatures]) -> np.ndarray:
        out = np.zeros((len(users), self.sim.shape[0]), dtype=np.float32)
        for row, user in enumerate(users):
            idx = self.table.indices(user.recent_items)
            if len(idx):
                out[row] = self.sim[idx].sum(axis=0)
        return out


class TwoTowerScorer:
    name = "two-tower"

    def __init__(self, model: RankerModel) -> None:
        self.model = model

    @torch.inference_mode()
    def scores(self, users: Sequence[UserFeatures]) -> np.ndarray:
        hist, aggs = self.model.user_tensors(list(users))
        net = self.model.net.inputs
        user_vecs = net.two_tower.user(hist, aggs)
        return (user_vecs @ net.item_vecs.T).float().cpu().numpy()


class TwoTowerRankerScorer:
    name = "two-tower + ranker"

    def __init__(self, model: RankerModel, depth: int) -> None:
        self.model = model
        self.retrieve = TwoTowerScorer(model)
        self.depth = depth

    def scores(
        self, users: Sequence[UserFeatures], exclude: Sequence[np.ndarray] = ()
    ) -> np.ndarray:
        base = self.retrieve.scores(users)
        masked = base.copy()
        masked[:, 0] = -np.inf
        for row, known in enumerate(exclude):
            masked[row, known] = -np.inf
        depth = min(self.depth, masked.shape[1] - 1)
        top = np.argpartition(-masked, depth - 1, axis=1)[:, :depth]
        ranked = self.model.score_batch(
            list(users), [[self.model.table.item_id(int(i)) for i in row] for row in top]
        )
        # Re-ranked items first (offset above every two-tower score), the rest keep their order.
        # float64: in float32 an offset of 1e3 would round nearby scores into ties.
        out = base.astype(np.float64) - 1e3
        for row, scores in enumerate(ranked):
            out[row, top[row]] = scores.astype(np.float64) + 1e3
        return out


def ranking_metrics(top: np.ndarray, targets: Sequence[np.ndarray]) -> Metrics:
    """`top`: (U, >=20) dense indices best first; `targets`: each user's relevant indices."""
    discounts = 1.0 / np.log2(np.arange(2, K_RECALL + 2))
    recall, ndcg, hr = [], [], []
    for row, relevant in zip(top, targets, strict=True):
        rel = set(relevant.tolist())
        if not rel:
            continue
        hits = np.asarray([int(i) in rel for i in row[:K_RECALL]], dtype=float)
        recall.append(hits.sum() / len(rel))
        ideal = discounts[: min(len(rel), K_RECALL)].sum()
        ndcg.append(float((hits * discounts).sum() / ideal))
        hr.append(float(hits[:K_HR].any()))
    return Metrics(
        recall_20=float(np.mean(recall)) if recall else 0.0,
        ndcg_20=float(np.mean(ndcg)) if ndcg else 0.0,
        hr_10=float(np.mean(hr)) if hr else 0.0,
        users=len(recall),
    )


def evaluate(
    scorer: Scorer,
    users: Sequence[UserFeatures],
    exclude: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    batch: int = 128,
) -> Metrics:
    return ranking_metrics(top_lists(scorer, users, exclude, batch), targets)


def top_lists(
    scorer: Scorer,
    users: Sequence[UserFeatures],
    exclude: Sequence[np.ndarray],
    batch: int = 128,
) -> np.ndarray:
    """(len(users), 20) dense indices best first, each user's `exclude` left out."""
    tops = []
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        ex = exclude[start : start + batch]
        if isinstance(scorer, TwoTowerRankerScorer):
            s = scorer.scores(chunk, ex)
        else:
            s = scorer.scores(chunk)
        s = s.astype(np.float64, copy=True)
        s[:, 0] = -np.inf
        for row, known in enumerate(ex):
            s[row, known] = -np.inf
        top = np.argpartition(-s, K_RECALL, axis=1)[:, :K_RECALL]
        order = np.take_along_axis(s, top, axis=1).argsort(axis=1)[:, ::-1]
        tops.append(np.take_along_axis(top, order, axis=1))
    if not tops:
        return np.zeros((0, K_RECALL), dtype=np.int64)
    return np.concatenate(tops)
