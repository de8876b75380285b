"""Where the LLM client sends its key, and what it does when the provider refuses the key.

The provider is an httpx MockTransport here; tests/integration/llm/test_client.py runs the
client against the real local provider."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from pydantic import SecretStr

from streamrec.infra.settings import LLMSettings, Settings
from streamrec.llm.breaker import BreakerState
from streamrec.llm.client import ChatMessage, LLMClient
from streamrec.llm.errors import LLMAuthenticationError, LLMBreakerOpen, LLMRequestError

MSG = [ChatMessage(role="user", content="describe item 1")]
KEY = "sk-unit-3b9f0c2a71"


def test_the_base_url_follows_the_local_providers_port(monkeypatch):
    monkeypatch.setenv("STREAMREC_LLM__LOCAL_PORT", "18999")
    assert Settings().llm.api_url == "http://127.0.0.1:18999/v1"
    s = Settings().with_overrides(llm={"local_port": 19001, "local_host": "10.0.0.5"})
    assert s.llm.api_url == "http://10.0.0.5:19001/v1"
    assert LLMSettings().api_url == "http://127.0.0.1:18080/v1"


def test_an_explicit_base_url_wins():
    s = Settings().with_overrides(llm={"base_url": "https://api.example/v1/", "local_port": 1})
    assert s.llm.api_url == "https://api.example/v1"


async def test_the_client_calls_the_derived_url():
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        body = {"model": "m", "choices": [{"message": {"role": "assistant", "content": "ok"}}]}
        return httpx.Response(200, json=body)

    settings = LLMSettings(local_port=18777)
    async with LLMClient(settings, transport=httpx.MockTransport(handler)) as client:
        assert (await client.complete(MSG)).text == "ok"
        assert "18777" in repr(client)
    assert seen == ["http://127.0.0.1:18777/v1/chat/completions"]


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_key_opens_the_breaker_and_stops_the_calls(status, caplog):
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(status, json={"error": {"message": f"invalid key {KEY}"}})

    states: list[BreakerState] = []
    settings = LLMSettings(api_key=SecretStr(KEY), requests_per_minute=60_000, burst=50)
    caplog.set_level(logging.INFO)
    async with LLMClient(
        settings, on_breaker_change=states.append, transport=httpx.MockTransport(handler)
    ) as client:
        with pytest.raises(LLMAuthenticationError) as refused:
            await client.complete(MSG)
        assert isinstance(refused.value, LLMRequestError)  # not retried, as any 4xx
        outcomes = await asyncio.gather(
            *(client.complete(MSG) for _ in range(40)), return_exceptions=True
        )
        assert all(isinstance(o, LLMBreakerOpen) for o in outcomes)
        assert calls == 1, "the provider was called again after it refused the key"
        assert client.breaker.state is BreakerState.OPEN and states == [BreakerState.OPEN]
        assert client.stats.auth_failures == 1
        assert client.breaker.retry_in() == pytest.approx(settings.breaker_reset_s, abs=1)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and str(status) in errors[0].getMessage()
    assert "STREAMREC_LLM__API_KEY" in errors[0].getMessage()
    assert KEY not in caplog.text and KEY not in str(refused.value)


async def test_a_refused_trial_opens_the_breaker_again():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401)

    settings = LLMSettings(breaker_reset_s=0.0, requests_per_minute=60_000, burst=50)
    async with LLMClient(settings, transport=httpx.MockTransport(handler)) as client:
        for _ in range(3):
            with pytest.raises(LLMAuthenticationError):
                await client.complete(MSG)
        assert client.breaker.state is BreakerState.OPEN
        assert client.breaker.trips == 3 and client.stats.auth_failures == 3
