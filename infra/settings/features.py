"""Session and long-term features, and trending."""

from __future__ import annotations

from pydantic import Field

from streamrec.infra.settings.base import Section


class FeatureSettings(Section):
    """Session/long-term features and trending."""

    session_gap_s: int = 1800
    allowed_lateness_s: int = Field(600, description="older events (per user) are dropped")
    recent_ids_max: int = Field(1000, description="dedup ids kept per user (bounded)")
    last_items: int = 10
    affinity_half_life_s: float = 7 * 24 * 3600.0
    top_genres: int = 3
    batch_max: int = Field(500, description="micro-batch: at most this many events")
    batch_ms: float = Field(5.0, description="micro-batch: at most this long to fill")
    trending_top_n: int = 100
    trending_flush_ms: float = Field(500.0, description="how often POPULAR is republished")
    instance: str = Field("", description="worker instance tag: separate local state dirs")
    stall_s: float = Field(
        20.0, gt=0, description="session worker: re-seek a partition with no commit this long"
    )
    state_cache_max: int = Field(
        100_000, ge=0, description="session worker: decoded user states kept in memory (0: off)"
    )
    gc_threshold: int = Field(
        10_000,
        ge=0,
        description="session worker: Python's gen-0 GC threshold after start-up (0: Python's)",
    )
