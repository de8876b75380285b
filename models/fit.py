"""Training loops of the two models (small, seeded, CPU-friendly, CUDA when present).

Responsibilities:
- `fit_two_tower`: one example per training interaction (the item as target, the user's
  point-in-time features as input), in-batch softmax with a popularity (logQ) correction
  and the other in-batch copies of the target masked out; for the attention user tower,
  a loss at every position of each user's ordered training sequence instead (the next
  `SEQUENCE_HORIZON` items as targets, a full softmax over the catalog);
- `fit_ranker`: the validation interactions as positives, each against negatives sampled
  from the trained two-tower's top `ranker_depth` (what the ranker re-scores in serving),
  with a listwise softmax loss; every feature is point-in-time through the same
  `FeatureSource`; with the reference distribution of its dense inputs over (a seeded
  sample of) those training rows, which serving's skew check compares with (ADR 0131);
- determinism: seeded torch / numpy generators, fixed thread count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

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

# The per-position loss: windows (of `history_len` positions) a step, and passes over all
# windows a retriever epoch. One pass makes each training interaction a target once, as an
# epoch of the per-interaction loss does, at ~1/history_len of its compute, so an epoch is
# several passes.
SEQUENCE_BATCH = 64
SEQUENCE_PASSES = 9
# The step size of the per-position loss at most this: at models.lr's 3e-3 the attention
# tower peaked lower and overfitted sooner on ML-100K (BENCHMARKS.md, the attention tower).
SEQUENCE_MAX_LR = 1e-3
# Labels of a position: the next this many items (1 = SASRec's next item). The evaluation
# asks for a user's next ~10% of items, not only the next one.
SEQUENCE_HORIZON = 5
# Leave out of each position's softmax the items it has read (the evaluation never ranks
# an item the user already has), except its own labels.
SEQUENCE_MASK_SEEN = True
# AdamW's decoupled weight decay for the per-position loss (0: plain Adam's steps), and
# the softmax temperature (None: models.temperature, the in-batch loss's).
SEQUENCE_WEIGHT_DECAY = 0.1
SEQUENCE_TEMPERATURE: float | None = 0.1
# The trained model is an exponential moving average of the weights, step by step, with
# this decay (0: the last step's weights).
SEQUENCE_EMA = 0.99


def sequence_recipe() -> str:
    """The per-position loss's constants, for the version hash of a model trained with it."""
    return repr(
        (
            SEQUENCE_BATCH,
            SEQUENCE_PASSES,
            SEQUENCE_MAX_LR,
            SEQUENCE_HORIZON,
            SEQUENCE_MASK_SEEN,
            SEQUENCE_WEIGHT_DECAY,
            SEQUENCE_TEMPERATURE,
            SEQUENCE_EMA,
        )
    )


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


def _config(cfg: ModelSettings, table: ItemTable) -> TwoTowerConfig:
    return TwoTowerConfig(
        n_items=len(table),
        content_dim=table.content.shape[1],
        dim=cfg.dim,
        history_len=cfg.history_len,
        session_len=cfg.session_len,
        user_tower=cfg.user_tower,
    )


def fit_two_tower(
    cfg: ModelSettings,
    table: ItemTable,
    source: FeatureSource,
    train: pd.DataFrame,
    device: torch.device,
    epochs: int | None = None,
    loss: Literal["interaction", "sequence"] | None = None,
    tower: TwoTowerConfig | None = None,
    progress: Callable[[int, TwoTower], None] | None = None,
) -> TwoTower:
    """`loss`: None = the tower's own (per position for "attention", else per interaction);
    `tower` overrides the network's config built from `cfg`, and `progress(passes, model)`
    runs after each pass of the per-position loss (benchmarks: learning curves)."""
    tower = tower or _config(cfg, table)
    if loss is None:
        loss = "sequence" if tower.user_tower == "attention" else "interaction"
    if loss == "sequence":
        return _fit_sequence(cfg, tower, table, train, device, epochs, progress)
    feats = source.features(train[["user_id", "item_id", "ts"]])
    target = torch.from_numpy(table.indices_or_zero(feats["item_id"].tolist()))
    keep = target > 0
    if not bool(keep.any()):
        raise TrainingError("no training interaction is on a catalog item")
    hist, aggs = _inputs(table, feats, cfg.history_len)
    hist, aggs, target = hist[keep], aggs[keep], target[keep]
    counts = torch.bincount(target, minlength=len(table) + 1).float()
    log_q = torch.log((counts / counts.sum()).clamp(min=1e-9)).to(device)

    model = TwoTower(tower, table).to(device)
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


def sequence_windows(
    table: ItemTable, train: pd.DataFrame, length: int, horizon: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each user's training sequence (ordered by ts, seq) as left-padded windows.

    Returns (history (W, length), aggregates (W, length, 2), target (W, length, horizon)):
    position j reads the items up to j and targets the `horizon` after it, the next one
    first (0 = none). Windows are cut from the newest end back, so every interaction after a
    user's first is a next-item target once; aggregates are each position's own: its count
    and mean rating so far."""
    ev = train.sort_values(["user_id", "ts", "seq"], kind="stable")
    idx_all = table.indices_or_zero(ev["item_id"].tolist())
    rating_all = ev["rating"].to_numpy(dtype=float)
    hist, aggs, target = [], [], []
    for rows in ev.groupby("user_id", sort=False).indices.values():
        keep = idx_all[rows] > 0
        items, ratings = idx_all[rows][keep], rating_all[rows][keep]
        rated = np.cumsum(~np.isnan(ratings))
        summed = np.cumsum(np.nan_to_num(ratings))
        mean = [float(s / r) if r else None for s, r in zip(summed, rated, strict=True)]
        agg = aggregates(list(range(1, len(items) + 1)), mean)
        # future[j, k]: the item k + 1 places after position j (0 past the end).
        padded = np.concatenate([items, np.zeros(horizon, np.int64)])
        future = np.stack([padded[k + 1 : k + 1 + len(items)] for k in range(horizon)], axis=1)
        end = len(items) - 1
        while end > 0:
            start = max(0, end - length)
            width = end - start
            h, a, t = (
                np.zeros(length, np.int64),
                np.zeros((length, 2), np.float32),
                np.zeros((length, horizon), np.int64),
            )
            h[length - width :] = items[start:end]
            a[length - width :] = agg[start:end]
            t[length - width :] = future[start:end]
            hist.append(h)
            aggs.append(a)
            target.append(t)
            end = start
    if not hist:
        raise TrainingError("no user has two training interactions on catalog items")
    return (
        torch.from_numpy(np.stack(hist)),
        torch.from_numpy(np.stack(aggs)),
        torch.from_numpy(np.stack(target)),
    )


def _fit_sequence(
    cfg: ModelSettings,
    tower: TwoTowerConfig,
    table: ItemTable,
    train: pd.DataFrame,
    device: torch.device,
    epochs: int | None,
    progress: Callable[[int, TwoTower], None] | None = None,
) -> TwoTower:
    """The per-position loss: every position's vector scored against every catalog item
    (full softmax: the whole item tower each step, cheap at catalog sizes like ML-100K's),
    each of the next `SEQUENCE_HORIZON` items a label (their log-likelihoods averaged)."""
    hist, aggs, target = sequence_windows(table, train, tower.history_len, SEQUENCE_HORIZON)
    model = TwoTower(tower, table).to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=min(cfg.lr, SEQUENCE_MAX_LR), weight_decay=SEQUENCE_WEIGHT_DECAY
    )
    temperature = SEQUENCE_TEMPERATURE or cfg.temperature
    passes = (epochs or cfg.retriever_epochs) * SEQUENCE_PASSES
    swa = torch.optim.swa_utils
    ema = (
        swa.AveragedModel(model, multi_avg_fn=swa.get_ema_multi_avg_fn(SEQUENCE_EMA))
        if SEQUENCE_EMA
        else None
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    all_idx = torch.arange(len(table) + 1, device=device)
    for done in range(1, passes + 1):
        model.train()
        for batch in torch.randperm(len(hist), generator=gen).split(SEQUENCE_BATCH):
            h, a, t = hist[batch].to(device), aggs[batch].to(device), target[batch].to(device)
            at = t[..., 0] > 0
            u = model.user.sequence(h, a)[at]  # (positions with a target, dim)
            logits = u @ model.item(all_idx).T / temperature
            labels = t[at]  # (positions, horizon)
            if SEQUENCE_MASK_SEEN:
                seen = _seen(h, len(all_idx))[at].scatter(1, labels, False)
                logits = logits.masked_fill(seen, float("-inf"))
            logits[:, 0] = float("-inf")  # padding is never a label
            picked = logits.log_softmax(-1).gather(1, labels)
            real = labels > 0
            # where, not a product: a missing label has log-probability -inf (-inf * 0 = NaN).
            loss = -torch.where(real, picked, 0.0).sum() / real.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
        if progress is not None:
            progress(done, _trained(model, ema))
    return _trained(model, ema)


def _trained(model: TwoTower, ema: torch.optim.swa_utils.AveragedModel | None) -> TwoTower:
    return (model if ema is None else ema.module).eval()


def _seen(history: torch.Tensor, n: int) -> torch.Tensor:
    """(B, H, n) bools: True for the items read up to and including each position."""
    b, h = history.shape
    read = torch.ones(h, h, dtype=torch.bool, device=history.device).tril()  # [query, key]
    out = torch.zeros(b, h, n, dtype=torch.bool, device=history.device)
    out.scatter_(2, history[:, None, :].expand(b, h, h), read.expand(b, h, h))
    out[..., 0] = False
    return out


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
