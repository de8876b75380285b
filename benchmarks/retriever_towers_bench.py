"""The retriever's two user towers side by side: the mean tower against the attention tower.

Loads ML-100K and the cached content vectors as `streamrec train` does, makes the project's
split (per-user time split 80/10/10, 10% of users held out for cold start, split seed 42
whatever the training seed), trains the retriever with each user tower and seed, and scores
the two-tower alone with the evaluation of `streamrec train` (full ranking; Recall@20,
NDCG@20, HR@10; cold start after k = 1, 3, 5 interactions, NDCG@20). No stack, no ranker.

    nice -n 10 flock /tmp/streamrec-heavy.lock \\
        .venv/bin/python -m benchmarks.retriever_towers_bench --seeds 42,43,44 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from streamrec.infra.settings import Settings
from streamrec.models import fit
from streamrec.models.content import content_vectors
from streamrec.models.dataset import Split, load_catalog, load_events, time_split
from streamrec.models.evaluate import COLD_START_KS, Metrics, evaluate
from streamrec.models.features import LogFeatureSource, UserFeatures
from streamrec.models.fit import deterministic, fit_two_tower, seed_everything
from streamrec.models.items import ItemTable, build_item_table
from streamrec.models.ranker import pick_device
from streamrec.models.train import _cold_sets, _test_sets
from streamrec.models.two_tower import TwoTower, aggregates, encode_histories

SPLIT_SEED = 42  # the project's split (models.seed's default), the same for every run


class TowerScorer:
    """The two-tower alone, as `evaluate.TwoTowerScorer` scores it, without a ranker."""

    name = "two-tower"

    def __init__(self, model: TwoTower, table: ItemTable, device: torch.device) -> None:
        self.model, self.table, self.device = model, table, device
        with torch.inference_mode():
            self.items = model.all_items()

    @torch.inference_mode()
    def scores(self, users: Sequence[UserFeatures]) -> np.ndarray:
        hist = encode_histories(
            self.table, [u.recent_items for u in users], self.model.cfg.history_len
        )
        aggs = aggregates([u.n_interactions for u in users], [u.mean_rating for u in users])
        vecs = self.model.user(
            torch.from_numpy(hist).to(self.device), torch.from_numpy(aggs).to(self.device)
        )
        return (vecs @ self.items.T).float().cpu().numpy()


def run_one(
    settings: Settings,
    split: Split,
    table: ItemTable,
    tower: str,
    seed: int,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    update: dict[str, Any] = {"seed": seed, "user_tower": tower, "history_len": args.history_len}
    if tower == "attention" and args.lr_attention is not None:
        update["lr"] = args.lr_attention
        fit.SEQUENCE_MAX_LR = args.lr_attention
    cfg = settings.models.model_copy(update=update)
    fit.SEQUENCE_PASSES = args.passes or fit.SEQUENCE_PASSES
    fit.SEQUENCE_BATCH = args.sequence_batch or fit.SEQUENCE_BATCH
    fit.SEQUENCE_HORIZON = args.horizon or fit.SEQUENCE_HORIZON
    if args.mask_seen is not None:
        fit.SEQUENCE_MASK_SEEN = args.mask_seen == "yes"
    if args.weight_decay is not None:
        fit.SEQUENCE_WEIGHT_DECAY = args.weight_decay
    if args.temperature is not None:
        fit.SEQUENCE_TEMPERATURE = args.temperature
    if args.ema is not None:
        fit.SEQUENCE_EMA = args.ema
    net = {"blocks": args.blocks, "heads": args.heads, "dropout": args.dropout}
    net_cfg = fit._config(cfg, table).model_copy(
        update={k: v for k, v in net.items() if v is not None}
    )
    seed_everything(seed, args.threads)
    source = LogFeatureSource(split.train, cfg.history_len)
    curve: list[dict[str, float]] = []
    paused = 0.0

    def progress(done: int, model: TwoTower) -> None:
        nonlocal paused
        if args.curve and done % args.curve == 0:
            t = time.perf_counter()
            warm, cold = _score(model, split, table, device, ks=(3,))
            curve.append({"passes": done, "ndcg_20": warm.ndcg_20, "cold_k3": cold["k=3"]})
            print(f"  {tower} passes {done}: NDCG@20 {warm.ndcg_20:.4f} k=3 {cold['k=3']:.4f}")
            paused += time.perf_counter() - t

    loss = args.loss if tower == "attention" else args.mean_loss
    wall, cpu = time.perf_counter(), time.process_time()
    with deterministic():
        model = fit_two_tower(
            cfg, table, source, split.train, device, args.epochs, loss, net_cfg, progress
        )
    wall, cpu = time.perf_counter() - wall - paused, time.process_time() - cpu - paused
    warm, cold = _score(model, split, table, device)
    return {
        "tower": tower,
        "seed": seed,
        "recall_20": warm.recall_20,
        "ndcg_20": warm.ndcg_20,
        "hr_10": warm.hr_10,
        "users": warm.users,
        "cold_ndcg_20": cold,
        "train_wall_s": wall,
        "train_cpu_s": cpu,
        "curve": curve,
    }


def _score(
    model: TwoTower,
    split: Split,
    table: ItemTable,
    device: torch.device,
    ks: Sequence[int] = COLD_START_KS,
) -> tuple[Metrics, dict[str, float]]:
    """Warm users' metrics and cold-start NDCG@20 after each k, as `streamrec train`'s."""
    scorer = TowerScorer(model, table, device)
    users, exclude, targets = _test_sets(split, table)
    warm = evaluate(scorer, users, exclude, targets)
    cold = {}
    for k in ks:
        c_users, c_ex, c_tg = _cold_sets(split, table, k)
        cold[f"k={k}"] = evaluate(scorer, c_users, c_ex, c_tg).ndcg_20
    return warm, cold


def _row(r: dict[str, Any], label: str) -> str:
    c = r["cold_ndcg_20"]
    return (
        f"| {label} | {r['recall_20']:.4f} | {r['ndcg_20']:.4f} | {r['hr_10']:.4f} | "
        f"{c['k=1']:.4f} | {c['k=3']:.4f} | {c['k=5']:.4f} | "
        f"{r['train_wall_s']:.0f} | {r['train_cpu_s']:.0f} |"
    )


def _mean(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("recall_20", "ndcg_20", "hr_10", "train_wall_s", "train_cpu_s")
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out["ndcg_20_std"] = float(np.std([r["ndcg_20"] for r in rows]))
    out["cold_ndcg_20"] = {
        k: float(np.mean([r["cold_ndcg_20"][k] for r in rows])) for k in rows[0]["cold_ndcg_20"]
    }
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--towers", default="mean,attention")
    p.add_argument("--seeds", default="42", help="comma-separated training seeds")
    p.add_argument("--epochs", type=int, default=None, help="default: models.retriever_epochs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--history-len", type=int, default=50)
    # Unset: the defaults of TwoTowerConfig and models/fit.py, what `streamrec train` uses.
    p.add_argument("--blocks", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--lr-attention", type=float, default=None, help="default: min(lr, 1e-3)")
    p.add_argument("--passes", type=int, default=None, help="per-position passes an epoch")
    p.add_argument("--sequence-batch", type=int, default=None)
    p.add_argument("--horizon", type=int, default=None, help="next items each position targets")
    p.add_argument("--mask-seen", choices=["yes", "no"], default=None)
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW's, per-position loss")
    p.add_argument("--temperature", type=float, default=None, help="per-position softmax's")
    p.add_argument("--ema", type=float, default=None, help="weights' moving average decay")
    p.add_argument("--loss", choices=["sequence", "interaction"], default="sequence")
    p.add_argument("--mean-loss", choices=["sequence", "interaction"], default="interaction")
    p.add_argument("--curve", type=int, default=0, help="score every N passes (0: only at end)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    settings = Settings()
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    events = load_events(settings, "ml-100k")
    items = load_catalog(settings)
    split = time_split(events, settings.models.cold_start_users, SPLIT_SEED)
    vectors = content_vectors(settings, items)  # cached by content hash: no re-embedding
    ratings = split.train.groupby("item_id")["rating"]
    table = build_item_table(
        items, vectors, ratings.size().to_dict(), ratings.mean().fillna(0).to_dict()
    )
    seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    for tower in args.towers.split(","):
        for seed in seeds:
            r = run_one(settings, split, table, tower, seed, args, device)
            results.append(r)
            print(_row(r, f"{tower} seed {seed}"), flush=True)
    print()
    print(
        "| tower | Recall@20 | NDCG@20 | HR@10 | cold k=1 | cold k=3 | cold k=5 | "
        "train wall s | train CPU s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    means = {}
    for tower in args.towers.split(","):
        rows = [r for r in results if r["tower"] == tower]
        for r in rows:
            print(_row(r, f"{tower}, seed {r['seed']}"))
        means[tower] = _mean(rows)
        print(_row(means[tower], f"**{tower}, mean of {len(rows)}**"))
    if args.json:
        payload = {
            "args": vars(args) | {"json": str(args.json)},
            "device": str(device),
            "runs": results,
            "mean": means,
            "split": pd.Series(split.window()["events"]).to_dict(),
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
