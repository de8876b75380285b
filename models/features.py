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


class LogFeatureSource:
    """Features computed from an interaction log (user_id, item_id, rating, ts, seq)."""

    def __init__(self, events: pd.DataFrame, history_len: int) -> None:
        self.history_len = history_len
        ev = events.sort_values(["ts", "seq"], kind="stable")
        self._users = {
            u: (g["ts"].to_numpy(), g["item_id"].to_numpy(), g["rating"].to_numpy(dtype=float))
            for u, g in ev.groupby("user_id", sort=False)
        }
        self._items = {
            i: (g["ts"].to_numpy(), np.cumsum(np.nan_to_num(g["rating"].to_numpy(dtype=float))))
            for i, g in ev.groupby("item_id", sort=False)
        }

    def features(self, labels: pd.DataFrame) -> pd.DataFrame:
        recent, n_user, mean_user, n_item, mean_item = [], [], [], [], []
        empty = (np.empty(0), np.empty(0, dtype=object), np.empty(0))
        for user, item, ts in zip(
            labels["user_id"].tolist(),
            labels["item_id"].tolist(),
            labels["ts"].tolist(),
            strict=True,
        ):
            u_ts, u_items, u_ratings = self._users.get(user, empty)
            k = int(np.searchsorted(u_ts, ts, side="left"))  # strictly before ts
            recent.append(u_items[max(0, k - self.history_len) : k].tolist())
            n_user.append(k)
            mean_user.append(float(np.nanmean(u_ratings[:k])) if k else np.nan)
            i_ts, i_cum = self._items.get(item, (np.empty(0), np.empty(0)))
            j = int(np.searchsorted(i_ts, ts, side="left"))
            n_item.append(j)
            mean_item.append(float(i_cum[j - 1] / j) if j else np.nan)
        out = labels.copy()
        out["recent_items"] = recent
        out["n_interactions"] = n_user
        out["mean_rating"] = mean_user
        out["item_popularity"] = n_item
        out["item_mean_rating"] = mean_item
        return out


def user_features_at(source: FeatureSource, user_id: str, ts: int) -> UserFeatures:
    """One user's features as of `ts` (strictly before), through the feature source."""
    row = source.features(pd.DataFrame({"user_id": [user_id], "item_id": [""], "ts": [ts]}))
    r = row.iloc[0]
    mean = r["mean_rating"]
    return UserFeatures(
        user_id=user_id,
        recent_items=list(r["recent_items"]),
        n_interactions=int(r["n_interactions"]),
        mean_rating=None if pd.isna(mean) else float(mean),
    )
