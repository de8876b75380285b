"""Keys, revocation and rate limits against the real broker and Redis.

- keys made and revoked with `streamrec keys` reach two separate followers (two consumers of
  auth.keys, as two serving processes have): a revoked key is refused by both;
- two limiters (two processes' worth) share one bucket in Redis: together they allow the
  burst, not twice it; with Redis unresponsive each falls back to its share, and returns to
  the shared bucket when Redis answers again;
- the real app, twice over one Redis: 429 + Retry-After once a key's burst is spent, whichever
  app answered; the request topic's limit per producer principal dead-letters the excess.
The recommender behind the apps is a stand-in: what is tested is in front of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient
from typer.testing import CliRunner

from streamrec.cli import app as cli
from streamrec.serving.app import create_app
from streamrec.serving.auth import Authenticator, AuthError, KeyRing, key_hash, new_key
from streamrec.serving.key_store import KeyFollower, publish
from streamrec.serving.metrics import ServingMetrics
from streamrec.serving.rate_limit import Rate, RateLimiter
from streamrec.serving.redis_stores import connect
from streamrec.serving.topic_server import TopicServer
from streamrec.serving.worker import ServingWorker
from streamrec.topics import ApiKeyRecord
from tests.kafka_helpers import wait_for
from tests.serving_doubles import InstantRecommender
from tests.unit.serving.test_topic_server import RecordingProducer, letters, message

pytestmark = pytest.mark.integration


def _on(settings, **auth: object):
    return settings.with_overrides(auth={"mode": "on", **auth})


def _cli(settings, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env=settings.to_env())
    assert result.exit_code == 0, result.output
    return result.output


def test_a_key_made_and_revoked_by_the_cli_reaches_every_follower(stack):
    settings = _on(stack)
    rings = [KeyRing(), KeyRing()]
    followers = [KeyFollower(settings, ring) for ring in rings]
    for f in followers:
        f.start()
    try:
        for f in followers:
            wait_for(f.loaded.is_set, 30, "the follower to read auth.keys")
        out = _cli(settings, "keys", "create", "--scope", "user", "--user", "7", "--name", "t")
        key = out.strip().splitlines()[-1]
        key_id = key.split("_")[1]
        auths = [Authenticator(settings.auth, ring) for ring in rings]
        for auth in auths:
            p = wait_for(lambda a=auth: _known(a, key), 10, "both processes to know the key")
            assert (p.id, p.scope, p.subject) == (f"key:{key_id}", "user", "7")
        listed = _cli(settings, "keys", "list")
        assert key_id in listed and key not in listed
        _cli(settings, "keys", "revoke", key_id)
        for auth in auths:
            wait_for(lambda a=auth: _known(a, key) is None, 10, "both processes to refuse it")
            with pytest.raises(AuthError, match="revoked"):
                auth.principal(key)
    finally:
        for f in followers:
            f.stop()


def _known(auth: Authenticator, key: str):
    try:
        return auth.principal(key)
    except AuthError:
        return None


def test_two_limiters_share_one_bucket_in_redis(stack, unique):
    rate = Rate(per_s=0.001, burst=20.0)  # no refill to speak of during the test

    async def run() -> list[bool]:
        clients = [connect(stack, 1.0), connect(stack, 1.0)]
        limiters = [RateLimiter(c, lease_share=0.25) for c in clients]
        try:
            return [await limiters[i % 2].check([(f"t:{unique}", rate)]) is None for i in range(40)]
        finally:
            for c in clients:
                await c.aclose()

    allowed = asyncio.run(run())
    assert sum(allowed) == 20  # the burst, once, across both
    assert allowed[:20] == [True] * 20


def test_requests_of_one_loop_turn_share_one_redis_call(stack, unique):
    rate = Rate(per_s=10.0, burst=20.0)

    async def run() -> tuple[list[float | None], int]:
        client = connect(stack, 1.0)
        limiter = RateLimiter(client)
        try:
            checks = [limiter.check([(f"u:{unique}:{i}", rate)]) for i in range(32)]
            results = list(await asyncio.gather(*checks))
            await limiter.drain()  # their first uses are taken from Redis together
            return results, limiter.redis_calls
        finally:
            await client.aclose()

    results, calls = asyncio.run(run())
    assert results == [None] * 32 and calls == 1


def test_a_request_that_takes_a_token_as_a_grant_lands_refuses_no_waiter(stack, unique):
    """The grant covers the requests that waited for it; one arriving just as it lands takes
    a token first. The waiter left short asks Redis again: the bucket is far from empty."""
    rate = Rate(per_s=10.0, burst=100.0)
    name = f"k:{unique}"

    async def run() -> tuple[list[float | None], float | None, int]:
        client = connect(stack, 1.0)
        limiter = RateLimiter(client, lease_share=0.01)  # grants of 1: sized by the waiters
        real_call = limiter._call
        newcomer: list[asyncio.Task[float | None]] = []
        armed = False

        async def call_then_newcomer(buckets):  # type: ignore[no-untyped-def]
            granted = await real_call(buckets)
            if armed and not newcomer:  # its first step runs before the waiters wake
                newcomer.append(asyncio.ensure_future(limiter.check([(name, rate)])))
            return granted

        limiter._call = call_then_newcomer  # type: ignore[method-assign]
        try:
            assert await limiter.check([(name, rate)]) is None  # known to the process now
            await limiter.drain()
            armed = True
            waiters = await asyncio.gather(*(limiter.check([(name, rate)]) for _ in range(12)))
            return list(waiters), await newcomer[0], limiter.redis_calls
        finally:
            await client.aclose()

    waiters, newcomer, calls = asyncio.run(run())
    assert newcomer is None
    assert waiters == [None] * 12  # before the fix, the last one: 0.1 (one token's wait)
    assert calls >= 3  # the first use, the waiters' grant, the one left short asking again


def test_a_new_users_first_request_passes_without_a_redis_call_on_its_path(stack, unique):
    key, user = Rate(per_s=100.0, burst=200.0), Rate(per_s=10.0, burst=20.0)
    admin = redis.Redis.from_url(stack.redis_url)

    async def run() -> tuple[int, int, int, list[float | None]]:
        client = connect(stack, 1.0)
        # A key grant big enough for the whole test: only the users are new.
        limiter = RateLimiter(client, lease_share=0.5, first_use_window_s=0.05)
        try:
            await limiter.check([(f"k:{unique}", key)])  # the key: known from here on
            await limiter.drain()
            before, known = limiter.redis_calls, limiter.first_uses
            # One at a time, each for a user never seen: no await reaches Redis.
            passed = []
            for i in range(20):
                user_id = f"n:{unique}:{i}"
                passed.append(await limiter.check([(f"k:{unique}", key), (user_id, user)]))
            on_path = limiter.redis_calls - before
            await limiter.drain()
            return on_path, limiter.redis_calls - before, limiter.first_uses - known, passed
        finally:
            await client.aclose()

    on_path, settled, first_uses, passed = asyncio.run(run())
    assert passed == [None] * 20
    assert on_path == 0 and settled == 1 and first_uses == 20
    # Every first use was taken from the shared buckets: each user's holds burst - its grant.
    for i in range(20):
        tokens = float(admin.hget(f"ratelimit:n:{unique}:{i}", "tokens"))
        assert tokens <= 19.0


def test_a_first_use_of_a_bucket_spent_elsewhere_is_one_too_many_then_refused(stack, unique):
    rate = Rate(per_s=0.001, burst=4.0)  # no refill to speak of during the test

    async def run() -> tuple[list[bool], list[bool], int]:
        clients = [connect(stack, 1.0), connect(stack, 1.0)]
        first, other = (RateLimiter(c, lease_share=1.0) for c in clients)
        try:
            # Another process takes the whole burst (its first use, then its grant).
            there = [await first.check([(f"s:{unique}", rate)]) is None for _ in range(6)]
            await first.drain()
            here = [await other.check([(f"s:{unique}", rate)]) is None for _ in range(3)]
            await other.drain()
            return there, here, other.over_admitted
        finally:
            for c in clients:
                await c.aclose()

    there, here, over = asyncio.run(run())
    assert there == [True] * 4 + [False] * 2
    # The new process lets its first request in before it knows; Redis then says empty, and
    # the bucket is refused from the next request on: one over, never more.
    assert here == [True, False, False] and over == 1


def test_with_redis_unresponsive_a_limiter_uses_its_share_then_redis_again(stack, unique):
    rate = Rate(per_s=0.001, burst=8.0)
    admin = redis.Redis.from_url(stack.redis_url)

    async def run() -> tuple[list[bool], int, bool]:
        client = connect(stack, 0.25)
        limiter = RateLimiter(client, processes=4, retry_s=0.5, lease_share=0.125)
        try:
            assert await limiter.check([(f"t:{unique}", rate)]) is None  # shared: 1 of 8
            admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
            down = [await limiter.check([(f"o:{unique}", rate)]) is None for _ in range(4)]
            fallbacks = limiter.fallbacks

            async def back() -> bool:
                before = (limiter.redis_calls, limiter.fallbacks)
                await limiter.check([(f"t:{unique}", rate)])
                return limiter.redis_calls > before[0] and limiter.fallbacks == before[1]

            recovered = False
            for _ in range(100):  # until Redis answers again (polling, with a bound)
                if await back():
                    recovered = True
                    break
                await asyncio.sleep(0.1)
            return down, fallbacks, recovered
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            await client.aclose()

    down, fallbacks, recovered = asyncio.run(run())
    assert down == [True, True, False, False]  # burst 8 over 4 processes: 2 locally
    assert fallbacks == 1
    assert recovered


@contextlib.asynccontextmanager
async def _no_lifespan(app: Any) -> AsyncIterator[None]:
    yield  # the stand-in recommender needs no stores; the app's limits keep their Redis


def _app(settings, record: ApiKeyRecord):
    worker = ServingWorker(settings)
    worker.recommender = InstantRecommender()  # type: ignore[assignment]
    app = create_app(settings, worker)
    app.router.lifespan_context = _no_lifespan
    app.state.keys.apply(record)
    return app


def test_two_apps_on_one_redis_answer_429_once_the_keys_burst_is_spent(stack, unique):
    settings = _on(stack, key_rate_per_s=0.001, key_burst=6, lease_share=0.2, user_rate_per_s=0)
    key_id, key = new_key()
    record = ApiKeyRecord(key_id=key_id, key_hash=key_hash(key), scope="service")
    headers = {"Authorization": f"Bearer {key}"}
    with (
        TestClient(_app(settings, record)) as a,
        TestClient(_app(settings, record)) as b,
    ):
        codes = [
            (a if i % 2 else b).get(f"/v1/users/{i}/recommendations", headers=headers)
            for i in range(10)
        ]
    assert [r.status_code for r in codes] == [200] * 6 + [429] * 4
    assert all(int(r.headers["retry-after"]) >= 1 for r in codes[6:])
    retry = codes[6].headers["retry-after"]
    assert codes[6].json() == {
        "detail": f"rate limit of key:{key_id} exceeded: retry in {retry} s",
        "retry": True,
    }


def test_the_request_topic_limits_each_producer_principal(stack):
    settings = _on(stack, principal_rate_per_s=0.001, principal_burst=2, user_rate_per_s=0)
    recommender = InstantRecommender()
    worker = SimpleNamespace(metrics=ServingMetrics(), recommender=recommender)
    server = TopicServer(settings, worker)  # type: ignore[arg-type]
    server.producer = RecordingProducer()  # type: ignore[assignment]
    principal = f"svc-{new_key()[0]}"
    other = f"other-{new_key()[0]}"
    requests = [
        {"correlation_id": f"c{i}", "user_id": "7", "principal": p}
        for i, p in enumerate([principal, principal, principal, other])
    ]

    async def run() -> None:
        server._loop = asyncio.get_running_loop()
        try:
            for i, r in enumerate(requests):  # on a consumer-like thread, as `_consume` does
                future = await asyncio.to_thread(server._dispatch, message(r, offset=i))
                if future is not None:
                    await asyncio.wrap_future(future)
        finally:
            await server.limits.aclose()  # type: ignore[union-attr]

    asyncio.run(run())
    assert [q.principal for q in recommender.queries] == [f"topic:{principal}"] * 2 + [
        f"topic:{other}"
    ]
    (letter,) = letters(server)
    assert f"rate limit of principal '{principal}' exceeded" in letter["reason"]
    assert json.loads(letter["value"])["correlation_id"] == "c2"


def test_a_published_record_round_trips_through_the_topic(stack):
    # publish() writes what read_keys() returns (the CLI's own path, without the CLI)
    from streamrec.serving.key_store import read_keys

    settings = _on(stack)
    key_id, key = new_key()
    publish(settings, ApiKeyRecord(key_id=key_id, key_hash=key_hash(key), scope="service"))
    assert read_keys(settings)[key_id].key_hash == key_hash(key)
