"""Feast's Redis online-store layout, named once for our writer and our reader.

`RedisOnlineStore` keeps one hash per entity, under the serialized entity key plus the
project; in it, per feature view, `_ts:<view>` holds the row's Timestamp proto and
mmh3("<view>:<feature>") each feature's Value proto. `features.online_writer` writes this
layout and `features.user_reader` reads it, so `get_online_features` and they agree (the
integration tests compare them).
"""

from __future__ import annotations

from typing import Any

from feast import FeatureView
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.infra.online_stores.redis import _versioned_fv_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from streamrec.features.errors import FeatureStoreError


def entity_key(config: Any, join_key: str, value: Any) -> bytes:
    """The Redis key of one entity's hash (`config`: the store's `RepoConfig`)."""
    entity = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=str(value))])
    return _redis_key(
        config.project,
        entity,
        entity_key_serialization_version=config.entity_key_serialization_version,
    )


class ViewLayout:
    """The fields one feature view (as registered: it knows its entity columns) keeps in an
    entity's hash; the field names are hashed once, not per row."""

    def __init__(self, view: FeatureView, config: Any) -> None:
        if len(view.entity_columns) != 1:
            raise FeatureStoreError(f"{view.name}: expected one entity column")
        self.join_key = view.entity_columns[0].name
        name = _versioned_fv_name(view, config)
        self.ts_field = f"_ts:{name}".encode()
        self.fields = {f.name: _mmh3(f"{name}:{f.name}") for f in view.features}
