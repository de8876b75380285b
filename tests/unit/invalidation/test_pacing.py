"""The refresh-rate bound: the token bucket keeps any window under rate * T + burst."""

from __future__ import annotations

import asyncio
import itertools
import time

from streamrec.infra.settings import InvalidationSettings
from streamrec.invalidation.pacing import max_commands, max_in_any_window, refresh_limiter


def test_max_in_any_window_counts_a_sliding_window() -> None:
    assert max_in_any_window([0.0, 0.1, 0.2, 1.05, 1.1], 1.0) == 3
    assert max_in_any_window([0.0, 0.5, 0.99, 1.0], 1.0) == 3
    assert max_in_any_window([], 1.0) == 0


def test_the_limiter_holds_its_bound_under_a_burst() -> None:
    cfg = InvalidationSettings(refresh_rate_per_s=50, refresh_burst=5)

    async def run() -> list[float]:
        limiter = refresh_limiter(cfg)
        stamps = []
        for _ in range(40):
            await limiter.acquire()
            stamps.append(time.monotonic())
        return stamps

    stamps = asyncio.run(run())
    for window in (0.1, 0.25, 0.5):
        assert max_in_any_window(stamps, window) <= max_commands(cfg, window)
    # And it is not idle either: 40 acquisitions take about (40 - burst) / rate seconds.
    assert stamps[-1] - stamps[0] >= (40 - cfg.refresh_burst - 1) / cfg.refresh_rate_per_s


def test_the_default_bucket_paces_evenly_from_the_first_command() -> None:
    # The default bucket of 1 lets no pass start with a burst: amplification is the rate.
    cfg = InvalidationSettings(refresh_rate_per_s=50)
    assert cfg.refresh_burst == 1

    async def run() -> list[float]:
        limiter = refresh_limiter(cfg)
        stamps = []
        for _ in range(12):
            await limiter.acquire()
            stamps.append(time.monotonic())
        return stamps

    stamps = asyncio.run(run())
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # A timer can wake late, never early: each gap is at least 1/rate (less a clock slack).
    assert min(gaps) >= 1 / cfg.refresh_rate_per_s - 0.002
    assert max_in_any_window(stamps, 0.1) <= 6  # rate * 0.1 s + 1
