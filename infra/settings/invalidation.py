"""The coalescing invalidation processor."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from streamrec.infra.settings.base import Section


class InvalidationSettings(Section):
    """The coalescing invalidation processor (ADR 0070)."""

    mode: Literal["coalesce", "broadcast"] = Field(
        "coalesce",
        description="broadcast = today's delete-everything-affected-at-once, for benchmarks only",
    )
    window_s: float = Field(
        1.0,
        gt=0,
        description="a changed item waits until it has been "
        "quiet this long, then all waiting items make one pass",
    )
    max_delay_s: float = Field(5.0, gt=0, description="a changed item waits at most this long")
    await_index_s: float = Field(
        10.0,
        ge=0,
        description="a new or changed vector also waits "
        "for the next index swap (at most this long; 0: no wait), so "
        "recomputed candidates can find the item",
    )
    refresh_rate_per_s: float = Field(20.0, gt=0, description="refresh commands emitted per s")
    refresh_burst: int = Field(
        1,
        ge=1,
        description="token bucket size: any window of T seconds "
        "holds at most rate * T + burst commands; 1 paces evenly, a "
        "larger bucket lets each pass start with a burst (ADR 0073)",
    )
    neighbour_rank: int = Field(
        50,
        ge=1,
        description="an item is near a user when it would "
        "rank within the user's top N items by content similarity",
    )
    recent_items: int = Field(20, ge=1, description="a user's taste = mean of this many recent")
    min_rating: float = Field(3.0, description="rated interactions below it are not taste")
    max_pending: int = Field(2_000_000, ge=1, description="queued refreshes kept at most")
    thresholds_max_age_s: float = Field(
        5.0,
        ge=0,
        description="recompute users' nearness thresholds at most this often as items arrive",
    )
