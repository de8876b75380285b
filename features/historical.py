"""Point-in-time training features through Feast's offline store (the backfill's Parquet).

Responsibilities:
- `get_historical_features(settings, entity_df, service)`: for every row of `entity_df`
  (entity keys + `event_timestamp`), the features of each view of the service as they were
  at that time (rows stamped at or before it, within the view's ttl); a row with no match
  gets nulls, and every input row comes back, in the input order.

Why not one `FeatureStore.get_historical_features` call: Feast 0.67's file offline store
(dask) drops an entity row from the result when its key has rows in a view's source but
none inside the ttl window before the row's time (docs/adr/0024); joining one view at a time
and merging onto the entity frame keeps every row.

A label at time t must not see the event it describes: pass t minus 1 ms (or the time the
prediction would have been made) as `event_timestamp`, since rows stamped exactly at t match.
"""

from __future__ import annotations

import warnings

import pandas as pd

from streamrec.features.errors import FeatureStoreError
from streamrec.features.feast_store import feature_store
from streamrec.features.feature_repo.definitions import TIMESTAMP_FIELD
from streamrec.infra.settings import Settings

ROW = "__row"


def get_historical_features(
    settings: Settings, entity_df: pd.DataFrame, service: str = "ranking_v1"
) -> pd.DataFrame:
    store = feature_store(settings)
    entity_df = entity_df.reset_index(drop=True)
    if TIMESTAMP_FIELD not in entity_df:
        raise FeatureStoreError(f"entity_df needs an {TIMESTAMP_FIELD!r} column")
    out = entity_df.copy()
    out[ROW] = range(len(out))
    try:
        fs = store.get_feature_service(service)
        for projection in fs.feature_view_projections:
            view = store.get_feature_view(projection.name)
            keys = [c.name for c in view.entity_columns]
            refs = [f"{view.name}:{f.name}" for f in projection.features]
            query = out[[ROW, *keys, TIMESTAMP_FIELD]]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = store.get_historical_features(entity_df=query, features=refs).to_df()
            names = [f.name for f in projection.features]
            out = out.merge(got[[ROW, *names]].drop_duplicates(ROW), on=ROW, how="left")
    except FeatureStoreError:
        raise
    except Exception as exc:
        raise FeatureStoreError(f"get_historical_features({service}) failed: {exc}") from exc
    return out.sort_values(ROW).drop(columns=[ROW]).reset_index(drop=True)
