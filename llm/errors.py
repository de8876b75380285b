"""Errors of the LLM client; httpx errors and HTTP statuses are translated into these.

StreamRecError
└── LLMError
    ├── LLMUnavailable        the call did not succeed; the caller may try again later
    │   ├── LLMTimeout        no answer within the per-call timeout or the call deadline
    │   ├── LLMRateLimited    the provider answered 429 (carries its Retry-After)
    │   ├── LLMServerError    5xx or a transport error (connection refused, reset)
    │   ├── LLMBreakerOpen    the breaker is open: the provider was not even called
    │   └── LLMRetryBudgetExhausted  retries would exceed the retry budget
    └── LLMRequestError       4xx other than 429, or an answer of the wrong shape: a bug or
        │                     a bad setting (key, model), not worth retrying
        └── LLMAuthenticationError  401/403: the key is refused; the breaker opens at once
"""

from __future__ import annotations

from streamrec.errors import StreamRecError


class LLMError(StreamRecError):
    """Base of the LLM client's errors."""


class LLMUnavailable(LLMError):
    """The provider did not answer usefully this time; retrying later may succeed."""


class LLMTimeout(LLMUnavailable):
    """No answer within the per-call timeout (or the whole call's deadline passed)."""


class LLMDeadlineExceeded(LLMTimeout):
    """The call's deadline passed (or would) while it waited its turn; not retried."""


class LLMRateLimited(LLMUnavailable):
    """The provider answered 429; `retry_after_s` is its Retry-After (None if absent)."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LLMServerError(LLMUnavailable):
    """A 5xx answer or a transport error (refused, reset, protocol)."""


class LLMBreakerOpen(LLMUnavailable):
    """The circuit breaker is open: the call failed fast without reaching the provider."""

    def __init__(self, retry_in_s: float) -> None:
        super().__init__(f"LLM circuit breaker open; next trial in {retry_in_s:.1f} s")
        self.retry_in_s = retry_in_s


class LLMRetryBudgetExhausted(LLMUnavailable):
    """A retry was due but the retry budget is spent (retries are capped fleet-wide)."""


class LLMRequestError(LLMError):
    """A 4xx other than 429, or a malformed answer: not retried."""


class LLMAuthenticationError(LLMRequestError):
    """401 or 403: the provider refuses the key. No call can succeed until the key is fixed,
    so the client opens its breaker at once instead of spending its rate on refusals."""
