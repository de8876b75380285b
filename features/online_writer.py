"""Writing feature rows to Feast's online store (Redis), in micro-batches.

Responsibilities:
- `write(view, rows)`: one batch of rows (dicts of the view's fields, its join key and
  `event_timestamp` in epoch ms) into the online store, through Feast's Redis online store
  (`RedisOnlineStore.online_write_batch`), so readers see them through `get_online_features`;
- `write_many_async`: several views' batches off the event loop (a thread), so a Faust
  worker keeps consuming;
- `frame`: rows as the DataFrame Feast's offline side wants (the backfill's Parquet).

Why not `FeatureStore.write_to_online_store(view, DataFrame)`: its pandas -> Arrow -> proto
conversion costs ~8 ms per call and ~200 us per row here (2 cores), which caps a worker that
writes small batches every few ms at a few hundred events/s; building the protos from the
view's schema and handing them to the same online store is ~1.5 ms per call and ~45 us per
row (docs/adr/0021). Errors from Feast or Redis become `FeatureStoreError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from feast import FeatureView
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List, StringList, Value
from feast.types import Array, Float64, Int64, String

from features.errors import FeatureStoreError
from infra.feast_store import feature_store
from infra.feature_repo.definitions import FEATURE_VIEWS, TIMESTAMP_FIELD
from infra.settings import Settings

_SCALARS: dict[object, Callable[[Any], Value]] = {
    String: lambda v: Value(string_val=v),
    Int64: lambda v: Value(int64_val=int(v)),
    Float64: lambda v: Value(double_val=float(v)),
}
_LISTS: dict[object, Callable[[Any], Value]] = {
    String: lambda v: Value(string_list_val=StringList(val=list(v))),
    Int64: lambda v: Value(int64_list_val=Int64List(val=list(v))),
    Float64: lambda v: Value(double_list_val=DoubleList(val=list(v))),
}


def _encoder(dtype: object) -> Callable[[Any], Value]:
    if isinstance(dtype, Array):
        return _LISTS[dtype.base_type]
    return _SCALARS[dtype]


def frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows with `event_timestamp` as epoch ms (int) to a DataFrame with UTC timestamps."""
    df = pd.DataFrame.from_records(list(rows))
    df[TIMESTAMP_FIELD] = pd.to_datetime(df[TIMESTAMP_FIELD], unit="ms", utc=True)
    return df


class _ViewEncoder:
    """Turns rows of one feature view into Feast's online-store tuples."""

    def __init__(self, view: FeatureView) -> None:
        self.view = view  # as registered (`features apply`): it knows its entity columns
        if len(view.entity_columns) != 1:
            raise FeatureStoreError(f"{view.name}: expected one entity column")
        self.join_key = view.entity_columns[0].name
        self.fields = [(f.name, _encoder(f.dtype)) for f in view.features]

    def encode(self, row: dict[str, Any]) -> tuple[EntityKey, dict[str, Value], datetime, None]:
        key = EntityKey(
            join_keys=[self.join_key], entity_values=[Value(string_val=str(row[self.join_key]))]
        )
        values = {name: enc(row[name]) for name, enc in self.fields}
        ts = datetime.fromtimestamp(row[TIMESTAMP_FIELD] / 1000, UTC)
        return key, values, ts, None


class OnlineWriter:
    """One FeatureStore config and Redis online store for a worker; one batch at a time."""

    def __init__(self, settings: Settings) -> None:
        self.store = feature_store(settings)
        self.online = RedisOnlineStore()
        try:
            self.encoders = {
                v.name: _ViewEncoder(self.store.get_feature_view(v.name)) for v in FEATURE_VIEWS
            }
        except FeatureStoreError:
            raise
        except Exception as exc:
            raise FeatureStoreError(
                f"feature views not registered (features apply?): {exc}"
            ) from exc
        self.rows_written = 0

    def write(self, view: str, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        encoder = self.encoders[view]
        try:
            data = [encoder.encode(r) for r in rows]
            self.online.online_write_batch(self.store.config, encoder.view, data, progress=None)
        except KeyError as exc:
            raise FeatureStoreError(f"a {view} row lacks the field {exc}") from exc
        except Exception as exc:
            raise FeatureStoreError(f"online write to {view} failed: {exc}") from exc
        self.rows_written += len(rows)

    def write_many(self, by_view: dict[str, Sequence[dict[str, Any]]]) -> None:
        for view, rows in by_view.items():
            self.write(view, rows)

    async def write_async(self, view: str, rows: Sequence[dict[str, Any]]) -> None:
        await asyncio.to_thread(self.write, view, rows)

    async def write_many_async(self, by_view: dict[str, Sequence[dict[str, Any]]]) -> None:
        """Several views in one hop to the thread (one thread switch per batch, not per view)."""
        await asyncio.to_thread(self.write_many, by_view)
