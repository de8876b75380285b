"""Stand-ins for the serving worker's parts, for tests of the HTTP edge alone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from streamrec.serving.answer import Answer


class InstantRecommender:
    """The recommender's interface, answering at once (an empty FULL answer) and keeping the
    queries it was given."""

    def __init__(self) -> None:
        self.admission = None
        self.queries: list[Any] = []

    async def recommend(self, query: Any) -> Answer:
        self.queries.append(query)
        return Answer(
            query.request_id, query.user_id, [], [], [], "FULL", None, 0.0, datetime.now(UTC)
        )
