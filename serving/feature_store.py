"""User features from Feast's online store, behind `serving.ports.UserFeatureStore`.

Responsibilities:
- read ONE entity (the user) per request with `features.user_reader.UserFeatureReader`: one
  HMGET on the worker's asyncio Redis client in Feast's layout, decoded with Feast's own
  value conversion (the SDK's `get_online_features` cost ~4-5 ms of CPU per call on the hot
  path: ADR 0045); the request's deadline bounds it like any other read;
- map the features area's `UserFeatures` to the models' `UserFeatures` (recent items oldest first,
  interaction count, mean rating) with the time of the user's last event;
- translate Feast and Redis errors into `DependencyError("features")`; a user Feast does not
  know is `None` (cold start), not an error.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import redis.asyncio as aioredis

from streamrec.features.errors import FeatureError
from streamrec.features.online import UserFeatures as OnlineUserFeatures
from streamrec.features.user_reader import UserFeatureReader
from streamrec.infra.settings import Settings
from streamrec.models.features import UserFeatures
from streamrec.serving.errors import DependencyError
from streamrec.serving.ports import FeatureRead


class FeastUserFeatures:
    def __init__(self, settings: Settings, client: aioredis.Redis, retry_s: float = 5.0) -> None:
        self.settings = settings
        self.client = client
        self.retry_s = retry_s
        self.reader: UserFeatureReader | None = None
        self._next_try = 0.0
        self._opening: asyncio.Lock | None = None

    async def open_reader(self) -> UserFeatureReader:
        """The reader, opened on a thread (Feast loads its registry, ~0.2 s) at the first read
        and, while the feature service is not registered (`features apply` not run yet), tried
        again every `retry_s`: serving starts and answers (STALE_FEATURES) meanwhile."""
        if self.reader is not None:
            return self.reader
        self._opening = self._opening or asyncio.Lock()
        async with self._opening:
            if self.reader is None:
                if time.monotonic() < self._next_try:
                    raise DependencyError("features", "feature service not registered yet")
                try:
                    self.reader = await asyncio.to_thread(UserFeatureReader, self.settings)
                except FeatureError as exc:
                    self._next_try = time.monotonic() + self.retry_s
                    raise DependencyError("features", str(exc)) from None
        return self.reader

    async def read(self, user_id: str) -> FeatureRead | None:
        reader = await self.open_reader()
        try:
            row = await reader.read(self.client, user_id)
        except FeatureError as exc:
            raise DependencyError("features", str(exc)) from None
        return self.feature_read(user_id, row)

    def decode(
        self, reader: UserFeatureReader, user_id: str, raw: list[bytes | None]
    ) -> FeatureRead | None:
        """An HMGET answer in `reader.fields` order (the merged read's share) as `read`
        would return it."""
        try:
            row = reader.decode(user_id, raw)
        except Exception as exc:  # a malformed value is the writer's bug: this read failed
            raise DependencyError("features", f"undecodable row: {exc}") from None
        return self.feature_read(user_id, row)

    @staticmethod
    def feature_read(user_id: str, row: OnlineUserFeatures) -> FeatureRead | None:
        if not row.found:
            return None
        n = row.total_interactions
        updated = (
            datetime.fromtimestamp(row.last_event_ms / 1000, UTC) if row.last_event_ms else None
        )
        return FeatureRead(
            features=UserFeatures(
                user_id=user_id,
                recent_items=list(row.last_items),
                n_interactions=n,
                mean_rating=row.mean_rating if n else None,
            ),
            updated_at=updated,
        )
