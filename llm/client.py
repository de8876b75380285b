"""An async client for an OpenAI-compatible `/v1/chat/completions` endpoint, built to be polite
to a rate-limited provider and never to hang its caller.

Responsibilities, in the order a call meets them:
- circuit breaker (`llm.breaker`): fail fast while the provider is known to be down;
- Retry-After: a 429 pauses *every* caller of this client until the provider's Retry-After
  has passed (one shared "not before" time), not just the caller that got it;
- token bucket (aiolimiter) at `rate_safety` x the provider's limit, so that no sliding
  window of the provider's period sees more than its limit (ADR 0060);
- per-attempt timeout (`timeout_s`) and a deadline for the whole call (`call_deadline_s`),
  waits for tokens and Retry-After included;
- retries (tenacity) of timeouts, 5xx, transport errors and 429s, with full-jitter
  exponential backoff, at most `max_attempts`, and only inside the retry budget
  (`llm.budget`);
- translation of httpx errors and HTTP statuses into `llm.errors`; a 401/403 (the key is
  refused) opens the breaker at once and is logged as an error, since every call until the
  key is fixed would be refused the same way.

The API key is a `SecretStr`: it is put in the Authorization header and nowhere else, and
neither this object's repr nor its log lines contain it.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from aiolimiter import AsyncLimiter
from pydantic import BaseModel, ConfigDict, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from streamrec.infra.settings import LLMSettings
from streamrec.llm.breaker import BreakerState, CircuitBreaker
from streamrec.llm.budget import RetryBudget
from streamrec.llm.errors import (
    LLMAuthenticationError,
    LLMBreakerOpen,
    LLMDeadlineExceeded,
    LLMRateLimited,
    LLMRequestError,
    LLMRetryBudgetExhausted,
    LLMServerError,
    LLMTimeout,
    LLMUnavailable,
)

log = logging.getLogger(__name__)


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str
    content: str


class _Choice(BaseModel):
    message: ChatMessage


class _ChatResponse(BaseModel):
    """The part of an OpenAI chat/completions answer we read (other fields are ignored)."""

    model: str = ""
    choices: list[_Choice]


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    attempts: int


@dataclass
class ClientStats:
    """What happened to this client's calls and attempts (reported by the enricher)."""

    calls: int = 0
    attempts: int = 0
    rate_limited: int = 0  # 429 answers absorbed
    timeouts: int = 0
    server_errors: int = 0
    breaker_rejected: int = 0
    budget_exhausted: int = 0
    auth_failures: int = 0  # 401/403: each one opened the breaker


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _retryable(exc: BaseException) -> bool:
    """Timeouts, 5xx, transport errors and 429s are retried; a spent deadline is not."""
    return isinstance(exc, LLMTimeout | LLMServerError | LLMRateLimited) and not isinstance(
        exc, LLMDeadlineExceeded
    )


class LLMClient:
    """One client per event loop (the token bucket and the pause are per process)."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        on_breaker_change: Callable[[BreakerState], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        rate_per_s = settings.requests_per_minute * settings.rate_safety / 60.0
        # A leaky bucket of `burst` tokens refilled at rate_per_s: any window of T seconds
        # admits at most burst + rate_per_s * T calls (ADR 0060 has the arithmetic).
        self._limiter = AsyncLimiter(settings.burst, settings.burst / rate_per_s)
        self.breaker = CircuitBreaker(
            settings.breaker_failures, settings.breaker_reset_s, on_change=on_breaker_change
        )
        self.budget = RetryBudget(settings.retry_budget_ratio, settings.retry_budget_min)
        self.stats = ClientStats()
        self._paused_until = 0.0
        headers = {"Content-Type": "application/json"}
        key = settings.api_key.get_secret_value()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.AsyncClient(
            base_url=settings.api_url + "/",
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s),
            transport=transport,
            limits=httpx.Limits(max_connections=max(settings.concurrency, 1) * 2),
        )

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"LLMClient(base_url={s.api_url!r}, model={s.model!r}, "
            f"requests_per_minute={s.requests_per_minute}, breaker={self.breaker.state.name})"
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def complete(
        self, messages: list[ChatMessage], *, max_tokens: int | None = None
    ) -> Completion:
        """One chat completion; raises `LLMUnavailable` (retry later) or `LLMRequestError`."""
        s = self.settings
        payload = {
            "model": s.model,
            "messages": [m.model_dump() for m in messages],
            "max_tokens": max_tokens or s.max_tokens,
            "temperature": 0,
        }
        deadline = time.monotonic() + s.call_deadline_s
        self.stats.calls += 1
        self.budget.record_call()
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(s.max_attempts) | stop_after_delay(s.call_deadline_s),
            # Never sleep past the call's deadline (tenacity checks the delay before sleeping).
            wait=lambda state: min(self._wait(state), max(0.0, deadline - time.monotonic())),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                n = attempt.retry_state.attempt_number
                if n > 1 and not self.budget.try_retry():
                    self.stats.budget_exhausted += 1
                    raise LLMRetryBudgetExhausted("retry budget spent; not retrying")
                result = await self._attempt(payload, deadline)
                return Completion(text=result[0], model=result[1], attempts=n)
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, LLMRateLimited):
            # The shared pause already holds every caller until Retry-After; spread the
            # callers a little so they do not all hit the provider in the same instant.
            return wait_random_exponential(multiplier=0.05, max=1.0)(state)
        return wait_random_exponential(
            multiplier=self.settings.backoff_base_s, max=self.settings.backoff_max_s
        )(state)

    async def _attempt(self, payload: dict[str, Any], deadline: float) -> tuple[str, str]:
        try:
            self.breaker.before_call()
        except LLMBreakerOpen:
            self.stats.breaker_rejected += 1
            raise  # not a retryable error: fail fast
        try:
            await self._wait_for_turn(deadline)
        except BaseException:  # waiting is not the provider's failure
            self.breaker.neutral()
            raise
        try:
            result = await self._post(payload, deadline)
        except (LLMTimeout, LLMServerError):
            self.breaker.failure()
            raise
        except LLMAuthenticationError as exc:
            # Every call would be refused the same way: stop calling until a trial after
            # breaker_reset_s, rather than spend the whole rate on refusals.
            self.stats.auth_failures += 1
            self.breaker.trip()
            log.error(
                "LLM provider at %s refused the key (%s): calls paused for %.0f s (breaker "
                "open); check STREAMREC_LLM__API_KEY",
                self.settings.api_url,
                exc,
                self.settings.breaker_reset_s,
            )
            raise
        except BaseException:  # 429, 4xx, cancellation: nothing learnt about its health
            self.breaker.neutral()
            raise
        self.breaker.success()
        return result

    async def _wait_for_turn(self, deadline: float) -> None:
        """Wait out a Retry-After pause, then for a token, both within the call's deadline."""
        while (pause := self._paused_until - time.monotonic()) > 0:
            if time.monotonic() + pause > deadline:
                raise LLMDeadlineExceeded("the provider asked to wait past this call's deadline")
            await asyncio.sleep(pause)
        # Keep half a timeout for the request itself: a token taken too late would be spent
        # on an answer nobody waits for.
        remaining = deadline - time.monotonic() - self.settings.timeout_s / 2
        if remaining <= 0:
            raise LLMDeadlineExceeded("call deadline passed before a rate token was free")
        try:
            await asyncio.wait_for(self._limiter.acquire(), remaining)
        except TimeoutError:
            raise LLMDeadlineExceeded("call deadline passed waiting for a rate token") from None

    async def _post(self, payload: dict[str, Any], deadline: float) -> tuple[str, str]:
        self.stats.attempts += 1
        budget = min(self.settings.timeout_s, deadline - time.monotonic())
        if budget <= 0:
            raise LLMTimeout("call deadline passed")
        try:
            # httpx's timeouts are per socket operation; wait_for bounds the whole attempt.
            response = await asyncio.wait_for(
                self._http.post("chat/completions", json=payload), budget
            )
        except (TimeoutError, httpx.TimeoutException):
            self.stats.timeouts += 1
            log.warning("LLM call timed out after %.1f s", budget)
            raise LLMTimeout(f"no answer within {budget:.1f} s") from None
        except httpx.TransportError as exc:
            self.stats.server_errors += 1
            log.warning("LLM transport error: %s", type(exc).__name__)
            raise LLMServerError(f"transport error: {type(exc).__name__}") from None
        return self._read(response)

    def _read(self, response: httpx.Response) -> tuple[str, str]:
        status = response.status_code
        if status == 429:
            self.stats.rate_limited += 1
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after:
                self._paused_until = max(self._paused_until, time.monotonic() + retry_after)
            log.info("LLM provider answered 429; Retry-After %s s", retry_after)
            raise LLMRateLimited("429 Too Many Requests", retry_after)
        if status >= 500:
            self.stats.server_errors += 1
            log.warning("LLM provider answered %d", status)
            raise LLMServerError(f"provider answered {status}")
        if status in (401, 403):
            # Never echo the body of a 401/403: some providers quote the key they refused.
            raise LLMAuthenticationError(f"provider refused the key: {status}")
        if status >= 400:
            raise LLMRequestError(f"provider refused the request: {status}")
        try:
            parsed = _ChatResponse.model_validate_json(response.content)
            text = parsed.choices[0].message.content
        except (ValidationError, IndexError) as exc:
            raise LLMRequestError(f"answer is not a chat completion: {exc}") from None
        return text, parsed.model or self.settings.model


__all__ = ["ChatMessage", "ClientStats", "Completion", "LLMClient", "LLMUnavailable"]
