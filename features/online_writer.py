"""Writing feature rows to Feast's online store (Redis), in micro-batches.

Responsibilities:
- `write(view, rows)` / `write_many({view: rows})`: rows (dicts of the view's fields, its
  join key and `event_timestamp` in epoch ms) into the online store in Feast's Redis layout
  (the one `RedisOnlineStore` writes and reads: one hash per entity key, `_ts:<view>` and
  mmh3("<view>:<feature>") fields holding protos), so readers see them through
  `get_online_features`; every view of one entity in one HSET, one pipelined round trip
  per batch (two with the stored-timestamp check, `skip_dedup: false` in Feast's config);
- `write_many_async`: the same off the event loop (a thread), so a Faust worker keeps
  consuming;
- `frame`: rows as the DataFrame Feast's offline side wants (the backfill's Parquet).

Why not Feast's writers: `FeatureStore.write_to_online_store(view, DataFrame)` costs ~8 ms
per call and ~200 us per row here (2 cores); `RedisOnlineStore.online_write_batch` writes
one HSET per row and view and hashes every field name of every row; for the session
worker's two views this writer takes about half its time (docs/adr/0027). With the check
on, Feast's writer also skips a row whose event time equals the stored one (a session
update whose newest event shares its second with the previous one); this one writes it.
Errors from Redis become `FeatureStoreError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
from feast import FeatureView
from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List, StringList, Value
from feast.types import Array, Float64, Int64, String
from google.protobuf.timestamp_pb2 import Timestamp

from streamrec.features.errors import FeatureStoreError
from streamrec.features.feast_store import feature_store
from streamrec.features.feature_repo.definitions import FEATURE_VIEWS, TIMESTAMP_FIELD
from streamrec.features.redis_layout import ViewLayout, entity_key
from streamrec.infra.redis_clients import sync_client
from streamrec.infra.settings import Settings

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


ENTITY_KEYS_MAX = 200_000  # entity keys kept between batches (~100 bytes each)


def _encoder(dtype: object) -> Callable[[Any], Value]:
    if isinstance(dtype, Array):
        return _LISTS[dtype.base_type]
    return _SCALARS[dtype]


def frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows with `event_timestamp` as epoch ms (int) to a DataFrame with UTC timestamps."""
    df = pd.DataFrame.from_records(list(rows))
    df[TIMESTAMP_FIELD] = pd.to_datetime(df[TIMESTAMP_FIELD], unit="ms", utc=True)
    return df


class _ViewEncoder(ViewLayout):
    """Turns rows of one feature view into fields of Feast's Redis layout
    (`features.redis_layout`): `_ts:<view>` -> Timestamp proto, the features -> Value protos."""

    def __init__(self, view: FeatureView, config: Any) -> None:
        super().__init__(view, config)
        self.encoded = [(f.name, self.fields[f.name], _encoder(f.dtype)) for f in view.features]

    def values(self, row: dict[str, Any]) -> dict[bytes, bytes]:
        return {key: enc(row[name]).SerializeToString() for name, key, enc in self.encoded}


def _timestamp(ms: int) -> tuple[int, bytes]:
    """Epoch ms -> (nanoseconds, serialized Timestamp proto), exactly (no float rounding)."""
    ts = Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)
    return ts.seconds * 1_000_000_000 + ts.nanos, ts.SerializeToString()


def _nanos(raw: bytes | None) -> int:
    if not raw:
        return 0
    ts = Timestamp()
    ts.ParseFromString(raw)
    return ts.seconds * 1_000_000_000 + ts.nanos


class OnlineWriter:
    """Writes rows of our feature views to Feast's Redis online store in Feast's own layout,
    so `get_online_features` reads them; one batch (any number of views) at a time."""

    def __init__(self, settings: Settings) -> None:
        self.store = feature_store(settings)
        config = self.config = self.store.config
        try:
            self.encoders = {
                v.name: _ViewEncoder(self.store.get_feature_view(v.name), config)
                for v in FEATURE_VIEWS
            }
        except FeatureStoreError:
            raise
        except Exception as exc:
            raise FeatureStoreError(
                f"feature views not registered (features apply?): {exc}"
            ) from exc
        self.redis = sync_client(settings)
        self.skip_dedup = bool(getattr(config.online_store, "skip_dedup", False))
        self.rows_skipped = 0
        # Entity keys (a pure function of the store's config and the join key's value) are
        # kept between calls: a writer sees the same users again and again, and serializing
        # a key costs ~6 us (the session worker's writes: ~0.87x CPU per user with them kept).
        self._keys: dict[tuple[str, str], bytes] = {}

    def write(self, view: str, rows: Sequence[dict[str, Any]]) -> None:
        self.write_many({view: rows})

    def write_many(
        self, by_view: dict[str, Sequence[dict[str, Any]]], check_stored: bool | None = None
    ) -> None:
        """All views' rows, one HSET per entity with the fields of every view.

        With `check_stored` (two pipelined round trips) a row older than the stored one is
        skipped (a row of the same event time is newer state and is written; Feast's own
        writer would skip it). Without it (one round trip) every row is written: for a writer
        that owns its entities and only ever writes their newest state (the session worker).
        `None`: as Feast's config says (`skip_dedup`).
        """
        if check_stored is None:
            check_stored = not self.skip_dedup
        # entity key -> [(encoder, row, nanos, ts bytes)]
        entities: dict[bytes, list[tuple[_ViewEncoder, dict[str, Any], int, bytes]]] = {}
        keys = self._keys  # both user views share the entity's key
        if len(keys) > ENTITY_KEYS_MAX:
            keys.clear()  # bounded: start over rather than keep every entity ever written
        try:
            for view, rows in by_view.items():
                encoder = self.encoders[view]
                for row in rows:
                    ident = (encoder.join_key, str(row[encoder.join_key]))
                    key = keys.get(ident)
                    if key is None:
                        key = keys[ident] = entity_key(self.config, *ident)
                    nanos, ts = _timestamp(int(row[TIMESTAMP_FIELD]))
                    entities.setdefault(key, []).append((encoder, row, nanos, ts))
        except KeyError as exc:
            raise FeatureStoreError(f"a row lacks the field (or view) {exc}") from exc
        if not entities:
            return
        try:
            if check_stored:
                with self.redis.pipeline(transaction=False) as pipe:
                    for key, items in entities.items():
                        pipe.hmget(key, [enc.ts_field for enc, _, _, _ in items])
                    stored = pipe.execute()
            else:
                stored = [[None] * len(items) for items in entities.values()]
            with self.redis.pipeline(transaction=False) as pipe:
                for (key, items), prev in zip(entities.items(), stored, strict=True):
                    mapping: dict[bytes, bytes] = {}
                    latest: dict[bytes, int] = {}
                    for (enc, row, nanos, ts), raw in zip(items, prev, strict=True):
                        seen = max(_nanos(raw), latest.get(enc.ts_field, 0))
                        if nanos < seen:
                            self.rows_skipped += 1
                            continue
                        latest[enc.ts_field] = nanos
                        mapping[enc.ts_field] = ts
                        mapping.update(enc.values(row))
                    if mapping:
                        pipe.hset(key, mapping=mapping)
                pipe.execute()
        except KeyError as exc:
            raise FeatureStoreError(f"a row lacks the field {exc}") from exc
        except Exception as exc:
            raise FeatureStoreError(f"online write to {sorted(by_view)} failed: {exc}") from exc

    async def write_async(self, view: str, rows: Sequence[dict[str, Any]]) -> None:
        await asyncio.to_thread(self.write, view, rows)

    async def write_many_async(
        self, by_view: dict[str, Sequence[dict[str, Any]]], check_stored: bool | None = None
    ) -> None:
        """Several views in one hop to the thread (one thread switch per batch, not per view)."""
        await asyncio.to_thread(self.write_many, by_view, check_stored)
