"""User features through Feast (issue 4's online reader), behind `serving.ports.UserFeatureStore`.

Responsibilities:
- read ONE entity (the user) per request through `features.online.OnlineFeatures` on a small
  thread pool of its own (Feast's client is synchronous; a hung call occupies one of these
  threads, never the event loop, and the request's deadline still holds);
- map issue 4's `UserFeatures` to the models' `UserFeatures` (recent items oldest first,
  interaction count, mean rating) with the time of the user's last event;
- translate Feast and Redis errors into `DependencyError("features")`; a user Feast does not
  know is `None` (cold start), not an error.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from infra.settings import Settings
from models.features import UserFeatures
from serving.errors import DependencyError
from serving.ports import FeatureRead


class FeastUserFeatures:
    def __init__(self, settings: Settings, threads: int = 4) -> None:
        from features.online import OnlineFeatures

        self.reader = OnlineFeatures(settings)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="feast")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _read(self, user_id: str) -> FeatureRead | None:
        from features.errors import FeatureError

        try:
            row = self.reader.get_user_features([user_id]).get(user_id)
        except FeatureError as exc:
            raise DependencyError("features", str(exc)) from None
        if row is None or not row.found:
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

    async def read(self, user_id: str) -> FeatureRead | None:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, self._read, user_id)
        except RuntimeError as exc:  # the pool was shut down under us (worker stopping)
            raise DependencyError("features", str(exc)) from None
