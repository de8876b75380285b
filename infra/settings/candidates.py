"""The candidates processor."""

from __future__ import annotations

from pydantic import Field

from streamrec.infra.settings.base import Section


class CandidateSettings(Section):
    """The candidates processor."""

    max_candidates: int = 500
    debounce_ms: int = Field(200, ge=0, description="coalesce a user's triggers this long")
    history_len: int = Field(50, ge=1, description="recent items kept per user in Redis")
    covisit_window: int = Field(5, ge=1, description="recent items a new one co-occurs with")
    two_tower_k: int = Field(500, ge=0, description="enough alone to fill the list")
    covisit_k: int = Field(150, ge=0)
    content_k: int = Field(150, ge=0)
    trending_k: int = Field(100, ge=0)
    trending_window: str = "24h"
    session_users_max: int = Field(5, ge=0, description="up to this many: session-based")
    backfill_rate: float = Field(200.0, gt=0, description="users per second in backfills")
