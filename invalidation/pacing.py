"""The bound on the refresh rate: a token bucket (aiolimiter's leaky bucket).

`AsyncLimiter(burst, burst / rate)` holds `burst` tokens and refills `rate` per second, so
any window of T seconds holds at most `rate * T + burst` refresh commands: that is the
bound the processor promises and the tests check on the topic.
"""

from __future__ import annotations

from aiolimiter import AsyncLimiter

from streamrec.infra.settings import InvalidationSettings


def refresh_limiter(cfg: InvalidationSettings) -> AsyncLimiter:
    """A limiter for one event loop (aiolimiter must not be shared across loops)."""
    return AsyncLimiter(cfg.refresh_burst, cfg.refresh_burst / cfg.refresh_rate_per_s)


def max_commands(cfg: InvalidationSettings, window_s: float) -> int:
    """The most commands any window of `window_s` seconds may hold."""
    return int(cfg.refresh_rate_per_s * window_s + cfg.refresh_burst)


def max_in_any_window(timestamps_s: list[float], window_s: float) -> int:
    """The largest number of timestamps inside any half-open window [t, t + window_s)."""
    ts = sorted(timestamps_s)
    best = lo = 0
    for hi, t in enumerate(ts):
        while ts[lo] <= t - window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
