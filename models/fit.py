"""Training loops of the two models (small, seeded, CPU-friendly, CUDA when present).

Responsibilities:
- `fit_two_tower`: one example per training interaction (the item as target, the user's
  point-in-time features as input), in-batch softmax with a popularity (logQ) correction
  and the other in-batch copies of the target masked out;
- `fit_ranker`: the validation interactions as positives, each against negatives sampled
  from the trained two-tower's top `ranker_depth` (what the ranker re-scores in serving),
  with a listwise softmax loss; every feature is point-in-time through the same
  `FeatureSource`; with the reference distribution of its dense inputs over (a seeded
  sample of) those training rows, which serving's skew check compares with (ADR 0131);
- determinism: seeded torch / numpy generators, fixed thread count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from streamrec.infra.settings import ModelSettings
from streamrec.models.errors import TrainingError
from streamrec.models.feature_profile import FeatureProfile, build_profile
from streamrec.models.features import FeatureSource
from streamrec.models.items import ItemTable
from streamrec.models.ranker import (
    DENSE_FEATURES,
    DCNRanker,
    RankerConfig,
    RankerInputs,
    dense_matrix,
)
from streamrec.models.two_tower import TwoTower, TwoTowerConfig, aggregates, encode_histories

# Training rows (labels, each with all its candidates) the profile is built from: deciles
# of ~70k pairs are as good as of all of them, for a fraction of a second.
PROFILE_LABELS = 4096


@dataclass
class RankerFit:
    net: DCNRanker
    profile: FeatureProfile


def seed_everything(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads)


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels while training (restored after: serving keeps the fast ones)."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _inputs(
    table: ItemTable, feats: pd.DataFrame, history_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    hist = encode_histories(table, feats["recent_items"].tolist(), history_len)
    mean = [None if pd.isna(m) else float(m) for m in feats["mean_rating"].tolist()]
    aggs = aggregates(feats["n_interactions"].tolist(), mean)
    return torch.from_numpy(hist), torch.from_numpy(aggs)


def fit_two_tower(
    cfg: ModelSettings,
    table: ItemTable,
    source: FeatureSource,
    train: pd.DataFrame,
    device: torch.device,
    epochs: int | None = None,
) -> TwoTower:
    feats = source.features(train[["user_id", "item_id", "ts"]])
    target = torch.from_numpy(table.indices_or_zero(feats["item_id"].tolist()))
    keep = target > 0
    if not bool(keep.any()):
        raise TrainingError("no training interaction is on a catalog item")
    hist, aggs = _inputs(table, feats, cfg.history_len)
    hist, aggs, target = hist[keep], aggs[keep], target[keep]
    counts = torch.bincount(target, minlength=len(table) + 1).float()
    log_q = torch.log((counts / counts.sum()).clamp(min=1e-9)).to(device)

    model = TwoTower(
        TwoTowerConfig(
            n_items=len(table),
            content_dim=table.content.shape[1],
            dim=cfg.dim,
            history_len=cfg.history_len,
            session_len=cfg.session_len,
        ),
        table,
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(target)
    for _ in range(epochs or cfg.retriever_epochs):
        model.train()
        for batch in torch.randperm(n, generator=gen).split(cfg.batch_size):
            h, a, t = hist[batch].to(device), aggs[batch].to(device), target[batch].to(device)
            u = model.user(h, a)
            v = model.item(t)
            logits = u @ v.T / cfg.temperature - log_q[t][None, :]
            same = t[:, None] == t[None, :]
            eye = torch.eye(len(t), dtype=torch.bool, device=device)
            logits = logits.masked_fill(same & ~eye, float("-inf"))
            loss = F.cross_entropy(logits, torch.arange(len(t), device=device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _negatives(
    model: TwoTower,
    hist: torch.Tensor,
    aggs: torch.Tensor,
    positives: torch.Tensor,
    known: list[np.ndarray],
    n_neg: int,
    depth: int,
    rng: np.random.Generator,
    device: torch.device,
) -> np.ndarray:
    """(N, n_neg) dense indices sampled uniformly from the two-tower's top `depth`.

    Uniform over what the ranker will face at serving time (the retriever's top `depth`),
    not the hardest few: negatives drawn only from the very top would have higher two-tower
    scores than the typical positive and teach the ranker to distrust the retriever.
    """
    out = np.zeros((len(positives), n_neg), dtype=np.int64)
    with torch.no_grad():
        items = model.all_items()
        depth = min(depth, items.shape[0] - 2)
        for start in range(0, len(positives), 512):
            sl = slice(start, start + 512)
            s = (model.user(hist[sl].to(device), aggs[sl].to(device)) @ items.T).cpu().numpy()
            s[:, 0] = -np.inf
            for row, known_idx in enumerate(known[sl]):
                s[row, known_idx] = -np.inf
                s[row, int(positives[start + row])] = -np.inf
            top = np.argpartition(-s, depth, axis=1)[:, :depth]
            for row in range(len(top)):
                out[start + row] = rng.choice(top[row], size=n_neg, replace=False)
    return out


def fit_ranker(
    cfg: ModelSettings,
    table: ItemTable,
    two_tower: TwoTower,
    source: FeatureSource,
    labels: pd.DataFrame,
    known: dict[str, np.ndarray],
    device: torch.device,
    epochs: int | None = None,
) -> RankerFit:
    """`labels`: positives (user_id, item_id, ts); `known`: items each user must not get."""
    feats = source.features(labels[["user_id", "item_id", "ts"]]).reset_index(drop=True)
    positives = table.indices_or_zero(feats["item_id"].tolist())
    keep = positives > 0
    feats, positives = feats[keep].reset_index(drop=True), positives[keep]
    if feats.empty:
        raise TrainingError("no ranker training labels are on catalog items")
    hist, aggs = _inputs(table, feats, cfg.history_len)
    rng = np.random.default_rng(cfg.seed)
    empty = np.zeros(0, dtype=np.int64)
    negs = _negatives(
        two_tower,
        hist,
        aggs,
        torch.from_numpy(positives),
        [known.get(u, empty) for u in feats["user_id"].tolist()],
        cfg.ranker_negatives,
        cfg.ranker_depth,
        rng,
        device,
    )
    cands = np.concatenate([positives[:, None], negs], axis=1)  # positive in column 0
    # Point-in-time item popularity and mean rating for every (label, candidate) pair.
    pairs = pd.DataFrame(
        {
            "user_id": np.repeat(feats["user_id"].to_numpy(), cands.shape[1]),
            "item_id": [table.item_id(int(i)) for i in cands.ravel()],
            "ts": np.repeat(feats["ts"].to_numpy(), cands.shape[1]),
        }
    )
    item_feats = _item_point_in_time(source, pairs, cands.shape)
    pop = torch.from_numpy(item_feats[0])
    mean = torch.from_numpy(item_feats[1])
    cands_t = torch.from_numpy(cands)

    rcfg = RankerConfig(n_items=len(table))
    net = DCNRanker(rcfg, RankerInputs(rcfg, table, two_tower)).to(device)
    net.inputs.refresh_item_vectors()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=1e-5)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    zero = None
    for _ in range(epochs or cfg.ranker_epochs):
        net.train()
        for batch in torch.randperm(len(cands_t), generator=gen).split(256):
            logits = net(
                hist[batch].to(device),
                aggs[batch].to(device),
                cands_t[batch].to(device),
                pop[batch].to(device),
                mean[batch].to(device),
            )
            zero = torch.zeros(len(batch), dtype=torch.long, device=device)
            loss = F.cross_entropy(logits, zero)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    pick = torch.from_numpy(np.sort(rng.permutation(len(cands_t))[:PROFILE_LABELS]))
    # In chunks: the history's content vectors are (labels, history_len, 384) floats.
    values = np.concatenate(
        [
            dense_matrix(
                net.inputs,
                hist[rows].to(device),
                aggs[rows].to(device),
                cands_t[rows].to(device),
                pop[rows].to(device),
                mean[rows].to(device),
            )
            for rows in pick.split(256)
        ]
    )
    return RankerFit(net, build_profile(values, DENSE_FEATURES))


def _item_point_in_time(
    source: FeatureSource, pairs: pd.DataFrame, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    pop, mean = source.item_features(pairs)
    return pop.astype(np.float32).reshape(shape), np.nan_to_num(mean).astype(np.float32).reshape(
        shape
    )
