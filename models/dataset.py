"""The training set: the interaction log as a frame, the time split and the cold-start users.

Responsibilities:
- read an event log (ML-100K, or a JSONL/Parquet log in the interaction schema) into a
  frame of (user_id, item_id, rating, ts, seq), `seq` keeping the log's order for ties;
- a hash of that frame (the training cache key: the same data gives the same model);
- the evaluation protocol's split: each user's events ordered by (ts, seq), the first 80%
  train, the next 10% validation, the last 10% test;
- hold out a seeded share of users entirely for the cold-start evaluation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from streamrec.infra.settings import Settings
from streamrec.models.errors import TrainingError
from streamrec.streams import datasets
from streamrec.streams.sources.base import RowError
from streamrec.streams.sources.eventlog import open_event_log
from streamrec.streams.sources.movielens import MovieLensInteractions, load_items
from streamrec.topics import CatalogItem

COLUMNS = ["user_id", "item_id", "rating", "ts", "seq"]


def load_events(settings: Settings, source: str = "ml-100k") -> pd.DataFrame:
    """Every valid interaction of `source` ('ml-100k' or a .jsonl/.parquet path)."""
    if source == "ml-100k":
        src = MovieLensInteractions(datasets.fetch(settings, "ml-100k"))
    else:
        path = Path(source)
        if not path.exists():
            raise TrainingError(f"no such event log: {path}")
        src = open_event_log(path)
    rows = [
        (e.user_id, e.item_id, np.nan if e.rating is None else e.rating, int(e.ts.timestamp()), n)
        for n, e in enumerate(src)
        if not isinstance(e, RowError)
    ]
    if not rows:
        raise TrainingError(f"the event log {source!r} has no valid interactions")
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["rating"] = frame["rating"].astype(float)
    return frame


def load_catalog(settings: Settings) -> list[CatalogItem]:
    return load_items(datasets.fetch(settings, "ml-100k"))


def data_hash(events: pd.DataFrame, items: list[CatalogItem]) -> str:
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(events[COLUMNS], index=False).to_numpy().tobytes())
    for item in items:
        digest.update(f"{item.item_id}\x00{item.title}\x00{item.genres}".encode())
    return digest.hexdigest()[:16]


@dataclass
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    cold: pd.DataFrame  # every event of the held-out cold-start users

    def window(self) -> dict[str, object]:
        def span(f: pd.DataFrame) -> list[int]:
            return [int(f["ts"].min()), int(f["ts"].max())] if len(f) else []

        return {
            "train": span(self.train),
            "valid": span(self.valid),
            "test": span(self.test),
            "events": {
                "train": len(self.train),
                "valid": len(self.valid),
                "test": len(self.test),
                "cold_start": len(self.cold),
            },
            "users": int(self.train["user_id"].nunique()),
            "cold_start_users": int(self.cold["user_id"].nunique()),
        }


def time_split(events: pd.DataFrame, cold_share: float, seed: int) -> Split:
    """Per-user time-ordered 80/10/10, after holding out `cold_share` of users."""
    users = np.sort(events["user_id"].unique())
    rng = np.random.default_rng(seed)
    n_cold = round(len(users) * cold_share)
    cold_users = set(rng.choice(users, size=n_cold, replace=False).tolist()) if n_cold else set()
    ordered = events.sort_values(["user_id", "ts", "seq"], kind="stable")
    is_cold = ordered["user_id"].isin(cold_users)
    cold, warm = ordered[is_cold], ordered[~is_cold]
    if warm.empty:
        raise TrainingError("no users left to train on after the cold-start hold-out")
    pos = warm.groupby("user_id", sort=False).cumcount().to_numpy()
    size = warm.groupby("user_id", sort=False)["item_id"].transform("size").to_numpy()
    n_train = np.floor(size * 0.8).astype(int)
    n_valid_end = np.floor(size * 0.9).astype(int)
    part = np.where(pos < n_train, 0, np.where(pos < n_valid_end, 1, 2))
    return Split(
        train=warm[part == 0].reset_index(drop=True),
        valid=warm[part == 1].reset_index(drop=True),
        test=warm[part == 2].reset_index(drop=True),
        cold=cold.reset_index(drop=True),
    )
