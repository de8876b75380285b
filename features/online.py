"""The online reader API: user and item features through Feast, as pydantic models.

Responsibilities:
- `OnlineFeatures(settings)`: one FeatureStore (registry cached) for a process;
- `get_user_features(user_ids)`: session + long-term features of many users in one call
  (feature service `user_features_v1`);
- `get_item_features(item_ids)`: catalog + popularity features (`item_features_v1`).

A user or item the store does not know comes back with defaults and `found=False`, so a
caller can tell "no features yet" from "zero". Feast/Redis failures raise FeatureStoreError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from streamrec.features.errors import FeatureStoreError
from streamrec.features.feast_store import feature_store
from streamrec.infra.settings import Settings

USER_SERVICE = "user_features_v1"
ITEM_SERVICE = "item_features_v1"


class UserFeatures(BaseModel):
    model_config = ConfigDict(frozen=True)

    user_id: str
    found: bool = Field(description="the session view had a row for this user")
    last_items: list[str] = Field(default_factory=list)
    session_start_ms: int = 0
    session_length_s: float = 0.0
    session_interactions: int = 0
    genre_affinity: list[float] = Field(default_factory=list)
    last_event_ms: int = 0
    total_interactions: int = 0
    top_genres: list[str] = Field(default_factory=list)
    mean_rating: float = 0.0


class ItemFeatures(BaseModel):
    model_config = ConfigDict(frozen=True)

    item_id: str
    found: bool
    genres: list[str] = Field(default_factory=list)
    year: int = 0
    count_1h: int = 0
    count_24h: int = 0
    window_end_ms: int = 0


class OnlineFeatures:
    """Reads features through Feast's online store (Redis)."""

    def __init__(self, settings: Settings) -> None:
        self.store = feature_store(settings)

    def _read(self, service: str, key: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        try:
            fs = self.store.get_feature_service(service)
            columns = self.store.get_online_features(
                features=fs, entity_rows=[{key: i} for i in ids]
            ).to_dict()
        except Exception as exc:
            raise FeatureStoreError(f"get_online_features({service}) failed: {exc}") from exc
        return [{name: values[n] for name, values in columns.items()} for n in range(len(ids))]

    def get_user_features(self, user_ids: Sequence[str]) -> dict[str, UserFeatures]:
        out = {}
        for row in self._read(USER_SERVICE, "user_id", [str(u) for u in user_ids]):
            found = row.get("last_event_ms") is not None
            present = {
                k: v for k, v in row.items() if v is not None and k in UserFeatures.model_fields
            }
            out[row["user_id"]] = UserFeatures(**{**present, "found": found})
        return out

    def get_item_features(self, item_ids: Sequence[str]) -> dict[str, ItemFeatures]:
        out = {}
        for row in self._read(ITEM_SERVICE, "item_id", [str(i) for i in item_ids]):
            found = row.get("genres") is not None or row.get("window_end_ms") is not None
            present = {
                k: v for k, v in row.items() if v is not None and k in ItemFeatures.model_fields
            }
            out[row["item_id"]] = ItemFeatures(**{**present, "found": found})
        return out
