"""How often: token buckets shared by every serving process through Redis, leased in grants.

Responsibilities:
- `TokenBucket`: the bucket math (refill at `rate` per second up to `burst`, take one);
- `RateLimiter.check(buckets)`: a request passes when every bucket it counts against (its
  key or token subject, the user it asks for; over the request topic its producer principal)
  has a token. The buckets live in Redis (`ratelimit:{name}` hashes), updated by ONE atomic
  Lua script (`LEASE`) that refills and takes a grant of up to `lease_share` x burst tokens
  for each bucket named; the process then spends its grant locally, so most requests cost no
  Redis call at all. A bucket Redis finds empty answers with the wait until its next token:
  the process refuses locally until then (the `Retry-After`), so a client hammering at 10x
  its limit costs one Redis call per refill, not one per request;
- a bucket this process has never seen (a user asking for the first time) is full as far as
  the process knows: its first request passes at once, and the token is taken from Redis
  later, by one script call for every such first use of a `first_use_window_s` (ADR 0124).
  What Redis answers then (the rest of a grant, or empty) holds for the bucket's next
  requests. When the shared bucket was already empty, that first request was one too many:
  at most one per bucket, per process, per time the process forgets the bucket;
- when Redis fails, each process counts locally with its share of each limit (rate and burst
  / `processes`) for `redis_retry_s`, then tries Redis again: never open without bound.

Why leases (ADR 0096): one Redis round trip from the event loop costs about as much CPU as the
auth and limit checks together many times over; leasing 5% of the burst at a time makes it
one call per 10 requests of a busy key; and the requests of one turn of the event loop that
need a grant share one script call. A grant not spent within `LEASE_TTL_S` is dropped
(under-admission of at most one grant per process, never over-admission).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

LEASE_TTL_S = 1.0
LEASE_ATTEMPTS = 3  # script calls one request may wait for before it is refused
MAX_BUCKETS = 100_000  # per process: past it, the idle ones are forgotten
MAX_DEBITS = 256  # first uses held for one script call; more go at once (a short Redis call)
KEY_PREFIX = "ratelimit:"

# KEYS: the buckets; ARGV: rate, burst, wanted tokens for each bucket in turn. Returns, per
# bucket, the tokens granted and (as a string: Lua numbers come back truncated) the seconds
# until one is available. Time is the server's, so every process shares one clock.
LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local want = tonumber(ARGV[3 * i])
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(state[1]) or burst
  local ts = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
  local granted = 0
  local wait = 0
  if tokens >= 1 then
    granted = math.min(want, math.floor(tokens))
    tokens = tokens - granted
  else
    wait = (1 - tokens) / rate
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
  out[2 * i - 1] = granted
  out[2 * i] = tostring(wait)
end
return out
"""


@dataclass(frozen=True, slots=True)
class Rate:
    per_s: float
    burst: float

    def lease(self, share: float) -> int:
        """Tokens one process takes from Redis at a time."""
        return max(1, math.floor(self.burst * share))

    def share(self, processes: int) -> Rate:
        """This process's part of the limit when it cannot reach the others."""
        n = max(1, processes)
        return Rate(self.per_s / n, max(1.0, self.burst / n))


@dataclass(slots=True)
class TokenBucket:
    """A token bucket, full at first: `take` returns 0.0 (taken) or the seconds to wait."""

    rate: Rate
    tokens: float = -1.0
    ts: float = 0.0

    def take(self, now: float) -> float:
        if self.tokens < 0:
            self.tokens, self.ts = self.rate.burst, now
        self.tokens = min(self.rate.burst, self.tokens + max(0.0, now - self.ts) * self.rate.per_s)
        self.ts = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate.per_s


@dataclass(slots=True)
class _Lease:
    """What this process holds of a shared bucket."""

    tokens: int = 0
    expires: float = 0.0
    blocked_until: float = 0.0


@dataclass
class RateLimiter:
    """Shared token buckets by name; `redis` is an asyncio client (None: local only)."""

    redis: Any
    lease_share: float = 0.05
    processes: int = 1
    retry_s: float = 1.0
    clock: Any = time.monotonic
    redis_calls: int = 0
    fallbacks: int = 0
    first_use_window_s: float = 0.01
    first_uses: int = 0  # requests let in on a bucket's first use, before Redis was asked
    over_admitted: int = 0  # of those, the ones Redis then found no token for
    _leases: dict[str, _Lease] = field(default_factory=dict)
    _local: dict[str, TokenBucket] = field(default_factory=dict)
    _down_until: float = 0.0
    _script: Any = None
    _pending: list[tuple[list[tuple[str, Rate]], Any]] = field(default_factory=list)
    _debits: dict[str, tuple[Rate, int]] = field(default_factory=dict)  # first uses to take
    _flush_scheduled: bool = False
    _debit_timer: Any = None
    _flushes: set[Any] = field(default_factory=set)  # running flush tasks (kept referenced)

    async def check(self, buckets: Sequence[tuple[str, Rate]]) -> float | None:
        """None when the request may pass (one token taken from every bucket), else the
        seconds until it may (nothing taken)."""
        now = self.clock()
        if self.redis is None or now < self._down_until:
            return self._check_local(buckets, now)
        if len(self._leases) > MAX_BUCKETS:
            self._leases = {
                k: v for k, v in self._leases.items() if max(v.expires, v.blocked_until) > now
            }
        if self.first_use_window_s > 0 and self._pass_on_first_use(buckets, now):
            return None
        leases = [self._leases.setdefault(name, _Lease()) for name, _ in buckets]
        wait = max(lease.blocked_until for lease in leases) - now
        if wait > 0:
            return wait
        for lease in leases:
            if lease.expires <= now:
                lease.tokens = 0  # an old grant: the bucket has moved on without it
        # A grant is sized for the requests that waited for it, but a request arriving as it
        # lands may take a token first; then a waiter asks again rather than being refused
        # while Redis still has tokens. Only Redis's "empty" (`blocked_until`) refuses.
        for _ in range(LEASE_ATTEMPTS):
            short = [b for b, lease in zip(buckets, leases, strict=True) if lease.tokens < 1]
            if not short:
                break
            try:
                await self._lease(short)  # the grants are in the leases once it returns
            except (RedisError, OSError):
                return self._check_local(buckets, self.clock())  # `_flush` switched to local
            now = self.clock()
            wait = max(lease.blocked_until for lease in leases) - now
            if wait > 0:
                return wait
        # Still short after those attempts: other requests keep taking the grants first.
        for lease, (_, rate) in zip(leases, buckets, strict=True):
            if lease.tokens < 1:
                return 1.0 / rate.per_s
        for lease in leases:
            lease.tokens -= 1
        return None

    def _pass_on_first_use(self, buckets: Sequence[tuple[str, Rate]], now: float) -> bool:
        """Let a request in at once when some of its buckets are new to this process and the
        others hold a token here: the known ones pay now, the new ones with the next script
        call (the one a short lease makes, or the first-use window's own)."""
        leases = [self._leases.get(name) for name, _ in buckets]
        if all(lease is not None for lease in leases):
            return False
        for lease in leases:
            if lease is not None and (
                lease.tokens < 1 or lease.expires <= now or lease.blocked_until > now
            ):
                return False
        self.first_uses += 1
        for (name, rate), lease in zip(buckets, leases, strict=True):
            if lease is not None:
                lease.tokens -= 1
                continue
            self._leases[name] = _Lease()  # known from now on: its next request asks Redis
            self._debits[name] = (rate, self._debits.get(name, (rate, 0))[1] + 1)
        if not self._flush_scheduled:
            loop = asyncio.get_running_loop()
            if len(self._debits) >= MAX_DEBITS:  # a big call already: send it now
                self._flush_scheduled = True
                loop.call_soon(self._start_flush, loop)
            elif self._debit_timer is None:
                self._debit_timer = loop.call_later(
                    self.first_use_window_s, self._start_flush, loop
                )
        return True

    async def drain(self) -> None:
        """Wait until every first use and grant asked for so far is settled with Redis."""
        loop = asyncio.get_running_loop()
        while self._debits or self._pending or self._flushes:
            if (self._debits or self._pending) and not self._flush_scheduled:
                self._start_flush(loop)
            if self._flushes:
                await asyncio.gather(*self._flushes, return_exceptions=True)
            else:
                await asyncio.sleep(0)  # a flush scheduled with call_soon starts next turn

    async def _lease(self, buckets: Sequence[tuple[str, Rate]]) -> None:
        """Grants for `buckets` into their leases, from one script call shared by every
        request of this turn of the event loop that needs one (requests arrive together)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((list(buckets), future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._start_flush, loop)
        await future

    def _start_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush_scheduled = False
        if self._debit_timer is not None:
            self._debit_timer.cancel()  # the first uses ride on this call
            self._debit_timer = None
        pending, self._pending = self._pending, []
        debits, self._debits = self._debits, {}
        if not pending and not debits:
            return
        self._flushes.add(task := loop.create_task(self._flush(pending, debits)))
        task.add_done_callback(self._flushes.discard)

    async def _flush(
        self,
        pending: list[tuple[list[tuple[str, Rate]], Any]],
        debits: dict[str, tuple[Rate, int]] | None = None,
    ) -> None:
        # One grant per bucket, big enough for every request of the turn that names it and
        # for the tokens its first uses already spent.
        debits = debits or {}
        wanted: dict[str, tuple[Rate, int]] = dict(debits)
        for buckets, _ in pending:
            for name, rate in buckets:
                wanted[name] = (rate, wanted.get(name, (rate, 0))[1] + 1)
        try:
            granted = await self._call(
                [
                    (name, rate, max(count, rate.lease(self.lease_share)))
                    for name, (rate, count) in wanted.items()
                ]
            )
        except BaseException as exc:  # each waiting request falls back (or fails) with it
            if isinstance(exc, RedisError | OSError):
                self._down_until = self.clock() + self.retry_s
                self.fallbacks += 1
                log.warning(
                    "rate limits: Redis failed (%s); local shares for %.1f s", exc, self.retry_s
                )
                # The first uses let in still count, against this process's local shares.
                now = self.clock()
                for name, (rate, count) in debits.items():
                    bucket = self._local.setdefault(name, TokenBucket(rate.share(self.processes)))
                    for _ in range(count):
                        bucket.take(now)
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        now = self.clock()
        for name, (tokens, wait_s) in zip(wanted, granted, strict=True):
            lease = self._leases.setdefault(name, _Lease())
            spent = debits.get(name, (None, 0))[1]
            if tokens < spent:
                self.over_admitted += spent - tokens
            if tokens > spent:
                lease.tokens += tokens - spent
                lease.expires = now + LEASE_TTL_S
            elif tokens < spent or tokens == 0:
                lease.blocked_until = now + wait_s
        for _, future in pending:
            if not future.done():
                future.set_result(None)

    async def _call(self, buckets: Sequence[tuple[str, Rate, int]]) -> list[tuple[int, float]]:
        if self._script is None:
            self._script = self.redis.register_script(LEASE)
        args: list[float] = []
        for _, rate, want in buckets:
            args += [rate.per_s, rate.burst, want]
        self.redis_calls += 1
        raw = await self._script(keys=[KEY_PREFIX + name for name, _, _ in buckets], args=args)
        return [(int(raw[2 * i]), float(raw[2 * i + 1])) for i in range(len(buckets))]

    def _check_local(self, buckets: Sequence[tuple[str, Rate]], now: float) -> float | None:
        if len(self._local) > MAX_BUCKETS:
            self._local.clear()  # a Redis outage long enough to see that many: start afresh
        local = [
            self._local.setdefault(name, TokenBucket(rate.share(self.processes)))
            for name, rate in buckets
        ]
        waits = [bucket.take(now) for bucket in local]
        if max(waits) <= 0:
            return None
        for bucket, wait in zip(local, waits, strict=True):
            if wait <= 0:
                bucket.tokens += 1  # refused: the token taken from this one goes back
        return max(waits)


class Limits:
    """The limits of the settings (`auth`): per key or token subject and per user asked for
    over HTTP; per producer principal and per user over the request topic."""

    def __init__(self, settings: Any, redis: Any = None) -> None:
        from streamrec.serving.redis_stores import connect

        cfg = settings.auth
        self._own_client = redis is None
        client = redis if redis is not None else connect(settings, settings.redis.socket_timeout_s)
        self.limiter = RateLimiter(
            client,
            lease_share=cfg.lease_share,
            processes=cfg.processes or settings.serving.workers,
            retry_s=cfg.redis_retry_s,
            first_use_window_s=cfg.first_use_window_ms / 1000.0,
        )
        self.key_rate = Rate(cfg.key_rate_per_s, cfg.key_burst)
        self.user_rate = Rate(cfg.user_rate_per_s, cfg.user_burst) if cfg.user_rate_per_s else None
        self.principal_rate = Rate(cfg.principal_rate_per_s, cfg.principal_burst)

    def _user(self, user_id: str | None) -> list[tuple[str, Rate]]:
        if user_id is None or self.user_rate is None:
            return []
        return [(f"user:{user_id}", self.user_rate)]

    async def http(
        self, principal_id: str, rate_per_s: float | None, user_id: str | None
    ) -> float | None:
        rate = self.key_rate if rate_per_s is None else Rate(rate_per_s, max(1.0, 2 * rate_per_s))
        return await self.limiter.check([(principal_id, rate), *self._user(user_id)])

    async def topic(self, principal: str, user_id: str) -> float | None:
        return await self.limiter.check(
            [(f"topic:{principal}", self.principal_rate), *self._user(user_id)]
        )

    async def aclose(self) -> None:
        # First uses not yet taken from Redis are taken now, so a restart does not forget
        # them (bounded: a Redis that does not answer fails the call within its timeout).
        await self.limiter.drain()
        if self._own_client and self.limiter.redis is not None:
            await self.limiter.redis.aclose()
