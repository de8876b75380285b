"""Training features through Feast's historical retrieval (`features.backfill`'s offline Parquet).

`FeastFeatureSource` answers the same `FeatureSource` protocol as `LogFeatureSource`, from
`features.historical.get_historical_features` over the `user_features_v1` service, with
each label's timestamp moved 1 ms earlier so the row written for the label event itself
never matches (point in time: strictly before). Mapping to the model's inputs:

- `recent_items` <- `last_items` (the session processor keeps the last 10, newest last);
- `n_interactions` <- `total_interactions`, `mean_rating` <- `mean_rating` (0 = none);
- item popularity / mean rating stay the raw-log computation (`LogFeatureSource`): the
  Feast item view holds windowed trend counts (1 h / 24 h), not the all-time counts the
  serving model keeps in memory, and training must see what serving sees.

Needs `streamrec backfill features` to have written the Parquet for the same log.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from streamrec.features.feature_repo.definitions import TIMESTAMP_FIELD
from streamrec.infra.settings import Settings
from streamrec.models.features import LogFeatureSource

USER_SERVICE = "user_features_v1"


class FeastFeatureSource:
    def __init__(self, settings: Settings, events: pd.DataFrame) -> None:
        self.settings = settings
        self.items = LogFeatureSource(events, settings.models.history_len)

    def features(self, labels: pd.DataFrame) -> pd.DataFrame:
        from streamrec.features.historical import get_historical_features

        entity = pd.DataFrame(
            {
                "user_id": labels["user_id"].astype(str).to_numpy(),
                TIMESTAMP_FIELD: pd.to_datetime(
                    labels["ts"].to_numpy() * 1000 - 1, unit="ms", utc=True
                ),
            }
        )
        got = get_historical_features(self.settings, entity, USER_SERVICE)
        out = labels.copy().reset_index(drop=True)
        out["recent_items"] = [
            [str(i) for i in v] if isinstance(v, list | np.ndarray) else []
            for v in got["last_items"].tolist()
        ]
        out["n_interactions"] = got["total_interactions"].fillna(0).astype(int).to_numpy()
        mean = got["mean_rating"].astype(float).to_numpy()
        out["mean_rating"] = np.where(mean > 0, mean, np.nan)
        pop, item_mean = self.items.item_features(labels)
        out["item_popularity"] = pop
        out["item_mean_rating"] = item_mean
        return out

    def item_features(self, labels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return self.items.item_features(labels)
