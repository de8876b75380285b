"""Faults a scenario injects into the real stack while its load runs.

- `Outage`: when, in a run, the online store is unavailable: from `at` (a share of the run)
  for `share` of the run, at most `max_s` seconds;
- `RedisPause`: makes the stack's own redis-server unavailable for real by stopping the
  process (SIGSTOP) and resuming it (SIGCONT). Clients see what a failed primary looks like
  until a replica is promoted: connections that accept nothing and answer nothing, so every
  read runs into its timeout (not a quick "connection refused"). The data stays as it was,
  so recovery measures the serving worker, not a cold store.

The pause always ends: `resume` runs on exit from the `paused` block whatever happened, and
is a no-op if the process is already running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from streamrec.infra.redis_server import RedisServer
from streamrec.infra.settings import Settings


@dataclass(frozen=True)
class Outage:
    """The online store's outage over a run of `duration_s`: its start and its length."""

    at: float = 0.4  # share of the run before it starts (the evening curve peaks at 0.5)
    share: float = 0.25  # share of the run it lasts...
    max_s: float = 15.0  # ...but at most this long

    def window(self, duration_s: float) -> tuple[float, float]:
        start = self.at * duration_s
        return start, start + min(self.max_s, self.share * duration_s)


class RedisPause:
    """SIGSTOP / SIGCONT of the stack's redis-server (`streamrec up`'s, by its pid file)."""

    def __init__(self, settings: Settings) -> None:
        pid = RedisServer(settings).pid()
        if pid is None:
            raise RuntimeError(
                "the redis-failover scenario stops the stack's own redis-server, and none is "
                f"running under {settings.state_dir / 'redis'} (an external "
                "STREAMREC_REDIS__URL cannot be paused)"
            )
        self.pid = pid
        self.paused = False

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
            self.paused = False


@dataclass
class OutageClock:
    """When the outage really began and ended, in seconds since the load started."""

    started_s: float | None = None
    ended_s: float | None = None
    log: list[str] = field(default_factory=list)


async def run_outage(
    pause: RedisPause,
    window: tuple[float, float],
    t0: float,
    clock: OutageClock,
    say: Callable[[str], None] = print,
) -> None:
    """Pause at `t0 + window[0]`, resume at `t0 + window[1]` (monotonic); resumes even when
    cancelled (the load ended first, or failed)."""
    try:
        await asyncio.sleep(max(0.0, t0 + window[0] - time.monotonic()))
        pause.pause()
        clock.started_s = time.monotonic() - t0
        say(f"  redis-server {pause.pid} stopped (SIGSTOP) at t={clock.started_s:.1f} s")
        await asyncio.sleep(max(0.0, t0 + window[1] - time.monotonic()))
    finally:
        if pause.paused:
            pause.resume()
            clock.ended_s = time.monotonic() - t0
            say(f"  redis-server {pause.pid} resumed (SIGCONT) at t={clock.ended_s:.1f} s")
