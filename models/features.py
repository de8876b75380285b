"""Point-in-time features for training, and the user features the models score with.

Responsibilities:
- `UserFeatures`: what the ranker and the user tower need about a user at request time
  (serving builds it from the online store; the candidates processor from its history);
- `FeatureSource`: the ONE place training gets its features from. `LogFeatureSource`
  computes them from the raw interaction log with the point-in-time rule: a label event at
  time t sees only events strictly before t (same-second events included are excluded too),
  for the user's history and for the item's popularity and mean rating alike. A Feast
  historical-retrieval source plugs in here with the same output columns.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

FEATURE_COLUMNS = (
    "recent_items",  # list[str], oldest first, at most history_len
    "n_interactions",  # int, the user's events strictly before the label
    "mean_rating",  # float, NaN when none
    "item_popularity",  # int, the item's events strictly before the label
    "item_mean_rating",  # float, NaN when none
)


class UserFeatures(BaseModel):
    """A user as the models see them: recent items (oldest first) and two aggregates."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    recent_items: list[str] = Field(default_factory=list, description="oldest first")
    n_interactions: int = Field(0, ge=0)
    mean_rating: float | None = None


class FeatureSource(Protocol):
    """Point-in-time features for label rows (user_id, item_id, ts); see FEATURE_COLUMNS."""

    def features(self, labels: pd.DataFrame) -> pd.DataFrame: ...

    def item_features(self, labels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]: ...


class LogFeatureSource:
    """Features computed from an interaction log (user_id, item_id, rating, ts, seq)."""

    def __init__(self, events: pd.DataFrame, history_len: int) -> None:
        self.history_len = history_len
        ev = events.sort_values(["ts", "seq"], kind="stable")
        self._users = {}
        for u, g in ev.groupby("user_id", sort=False):
            ratings = g["rating"].to_numpy(dtype=float)
            rated = np.concatenate([[0], np.cumsum(~np.isnan(ratings))])
            summed = np.concatenate([[0.0], np.cumsum(np.nan_to_num(ratings))])
            self._users[u] = (g["ts"].to_numpy(), g["item_id"].to_numpy(), rated, summed)
        self._items = {}
        for i, g in ev.groupby("item_id", sort=False):
            ratings = g["rating"].to_numpy(dtype=float)
            rated = np.concatenate([[0], np.cumsum(~np.isnan(ratings))])
            summed = np.concatenate([[0.0], np.cumsum(np.nan_to_num(ratings))])
            self._items[i] = (g["ts"].to_numpy(), rated, summed)

    def features(self, labels: pd.DataFrame) -> pd.DataFrame:
        out = labels.copy()
        n = len(labels)
        recent: list[list[str]] = [[] for _ in range(n)]
        n_user = np.zeros(n, dtype=np.int64)
        mean_user = np.full(n, np.nan)
        ts_all = labels["ts"].to_numpy()
        for user, rows in labels.groupby("user_id", sort=False).indices.items():
            if user not in self._users:
                continue
            u_ts, u_items, rated, summed = self._users[user]
            ks = np.searchsorted(u_ts, ts_all[rows], side="left")  # strictly before ts
            n_user[rows] = ks
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_user[rows] = np.where(rated[ks] > 0, summed[ks] / rated[ks], np.nan)
            for row, k in zip(rows.tolist(), ks.tolist(), strict=True):
                recent[row] = u_items[max(0, k - self.history_len) : k].tolist()
        pop, mean_item = self.item_features(labels)
        out["recent_items"] = recent
        out["n_interactions"] = n_user
        out["mean_rating"] = mean_user
        out["item_popularity"] = pop
        out["item_mean_rating"] = mean_item
        return out

    def item_features(self, labels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(events of the item strictly before ts, their mean rating or NaN) per label row."""
        n = len(labels)
        pop = np.zeros(n, dtype=np.int64)
        mean = np.full(n, np.nan)
        ts_all = labels["ts"].to_numpy()
        for item, rows in labels.groupby("item_id", sort=False).indices.items():
            if item not in self._items:
                continue
            i_ts, rated, summed = self._items[item]
            js = np.searchsorted(i_ts, ts_all[rows], side="left")
            pop[rows] = js
            with np.errstate(invalid="ignore", divide="ignore"):
                mean[rows] = np.where(rated[js] > 0, summed[js] / rated[js], np.nan)
        return pop, mean
