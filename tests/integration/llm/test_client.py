"""The LLM client against the real local provider (HTTP on loopback, its own request log).

Time is scaled down: the provider allows 60 requests per 1 s window instead of 500 per 60 s
(7.2x faster), so a test takes seconds instead of minutes; the client's bucket is configured
in the same unit (3600/min). Latencies are 20-200 ms instead of 200 ms-2 s.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from pydantic import SecretStr

from streamrec.infra.processes import free_port
from streamrec.infra.settings import LLMSettings
from streamrec.llm.breaker import BreakerState
from streamrec.llm.client import ChatMessage, LLMClient
from streamrec.llm.errors import (
    LLMAuthenticationError,
    LLMBreakerOpen,
    LLMError,
    LLMRequestError,
    LLMServerError,
    LLMTimeout,
)
from streamrec.llm.local_provider import LocalProvider, max_in_window
from tests.integration.llm.conftest import SECRET
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.integration


def client_settings(provider: LocalProvider, **fields: object) -> LLMSettings:
    base = provider.settings.llm.model_copy(
        update={
            "requests_per_minute": 3600,  # 60/s, the provider's scaled limit
            "burst": 1,
            "rate_safety": 0.9,
            "timeout_s": 1.0,
            "call_deadline_s": 5.0,
            "concurrency": 32,
        }
    )
    return base.model_copy(update=fields)


def _msg(i: int) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=f"describe item {i}")]


@pytest.fixture(autouse=True)
def healthy(provider: LocalProvider) -> None:
    provider.admin.configure(
        limit=60, window_s=1.0, failure="none", latency_min_ms=20, latency_max_ms=200
    )


async def test_ten_times_the_limit_never_exceeds_it(provider: LocalProvider) -> None:
    since = time.time()
    settings = client_settings(provider, call_deadline_s=3.0)
    async with LLMClient(settings) as client:
        # 600 calls at once: ten times what the provider allows in a window.
        results = await asyncio.gather(
            *(client.complete(_msg(i)) for i in range(600)), return_exceptions=True
        )
    log = provider.admin.log(since)
    arrivals = [e.t for e in log]
    assert max_in_window(arrivals, 1.0) <= 60, "the provider saw more than its limit"
    assert not [e for e in log if e.status == 429], "the bucket let the provider refuse calls"
    ok = [r for r in results if not isinstance(r, BaseException)]
    shed = [r for r in results if isinstance(r, BaseException)]
    # What could not get a token within the call's deadline was shed, with our own error.
    assert all(isinstance(r, LLMTimeout) for r in shed)
    # Every success is a 200 in the provider's log (a 200 the client gave up on is possible
    # on a loaded machine: it waited past its timeout).
    assert len(ok) <= len([e for e in log if e.status == 200])
    # The bucket runs near the limit rather than starving (3 s at 54/s ~ 160 calls).
    assert len(ok) >= 80


async def test_429_retry_after_pauses_every_caller(provider: LocalProvider) -> None:
    provider.admin.configure(limit=5, window_s=2.0, latency_min_ms=0, latency_max_ms=10)
    # Start from an empty window: earlier tests' calls must have aged out of it.
    last = max((e.t for e in provider.admin.log()), default=0.0)
    wait_for(lambda: time.time() > last + 2.0, 5, "the provider's window to empty")
    since = time.time()
    async with LLMClient(client_settings(provider, requests_per_minute=60_000)) as client:
        answers = await asyncio.gather(*(client.complete(_msg(i)) for i in range(12)))
        assert client.stats.rate_limited > 0
    assert len(answers) == 12
    log = provider.admin.log(since)
    first_429 = min(e.t for e in log if e.status == 429)
    # Retry-After was 2 s: apart from calls already in flight when the first 429 was sent
    # (they land within a moment of it), nobody called again before it passed.
    in_pause = [e for e in log if first_429 + 0.5 < e.t < first_429 + 1.9]
    assert not in_pause, in_pause
    assert [e for e in log if e.t >= first_429 + 1.9], "the callers never came back"
    assert sum(e.status == 200 for e in log) == 12


async def test_hanging_provider_trips_the_breaker_and_recovery_closes_it(
    provider: LocalProvider,
) -> None:
    provider.admin.configure(failure="hang")
    settings = client_settings(
        provider, timeout_s=0.3, max_attempts=1, breaker_failures=3, breaker_reset_s=0.5
    )
    changes: list[BreakerState] = []
    async with LLMClient(settings, on_breaker_change=changes.append) as client:
        for i in range(3):
            with pytest.raises(LLMTimeout):
                await client.complete(_msg(i))
        assert client.breaker.state is BreakerState.OPEN
        before = len(provider.admin.log())
        t0 = time.monotonic()
        with pytest.raises(LLMBreakerOpen):
            await client.complete(_msg(99))
        assert time.monotonic() - t0 < 0.1  # failed fast
        assert len(provider.admin.log()) == before  # without calling the provider

        provider.admin.configure(failure="none")
        deadline = time.monotonic() + 10
        while True:  # poll the real condition: a call succeeds once the breaker lets a trial in
            try:
                await client.complete(_msg(100))
                break
            except LLMBreakerOpen as exc:
                assert time.monotonic() < deadline, "the breaker never let a trial call through"
                await asyncio.sleep(exc.retry_in_s or 0.05)
        assert client.breaker.state is BreakerState.CLOSED
        assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


async def test_errors_are_translated(provider: LocalProvider) -> None:
    provider.admin.configure(failure="error")
    async with LLMClient(client_settings(provider, max_attempts=2, backoff_base_s=0.01)) as c:
        with pytest.raises(LLMServerError):
            await c.complete(_msg(1))
        assert c.stats.attempts == 2
    nobody = f"http://127.0.0.1:{free_port()}/v1"
    async with LLMClient(client_settings(provider, base_url=nobody, max_attempts=1)) as c:
        with pytest.raises(LLMServerError, match="transport"):
            await c.complete(_msg(1))


async def test_the_api_key_never_appears_in_logs_or_reprs(
    provider: LocalProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    provider.admin.configure(limit=3, window_s=1.0)
    settings = client_settings(provider, timeout_s=0.5, requests_per_minute=60_000)
    async with LLMClient(settings) as client:
        await asyncio.gather(*(client.complete(_msg(i)) for i in range(6)))  # 429s on the way
        provider.admin.configure(limit=60, failure="hang")
        with pytest.raises(LLMError):
            await client.complete(_msg(7))
        assert SECRET not in repr(client)
    provider.admin.configure(failure="none")
    wrong = settings.model_copy(update={"api_key": SecretStr("sk-wrong-" + SECRET[::-1])})
    async with LLMClient(wrong) as client:
        with pytest.raises(LLMRequestError) as refused:
            await client.complete(_msg(8))
    assert "401" in str(refused.value)
    assert SECRET not in str(refused.value) and SECRET[::-1] not in str(refused.value)
    assert caplog.records, "nothing was logged: the check would be vacuous"
    assert SECRET not in caplog.text and SECRET[::-1] not in caplog.text
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert SECRET not in provider.log_file.read_text()
    assert SECRET not in str([e.model_dump() for e in provider.admin.log()])


async def test_a_refused_key_stops_the_calls_until_the_breakers_trial(
    provider: LocalProvider, caplog: pytest.LogCaptureFixture
) -> None:
    since = time.time()
    wrong = client_settings(provider, api_key=SecretStr("sk-wrong"), breaker_reset_s=30.0)
    async with LLMClient(wrong) as client:
        with pytest.raises(LLMAuthenticationError):
            await client.complete(_msg(1))
        outcomes = await asyncio.gather(
            *(client.complete(_msg(i)) for i in range(40)), return_exceptions=True
        )
        assert all(isinstance(o, LLMBreakerOpen) for o in outcomes)
        assert client.breaker.state is BreakerState.OPEN and client.stats.auth_failures == 1
    refused = [e for e in provider.admin.log(since) if e.status == 401]
    assert len(refused) == 1
    assert any("STREAMREC_LLM__API_KEY" in r.getMessage() for r in caplog.records)
