"""The LLM provider's circuit breaker: the shared state machine (`streamrec.breaker`) with
`LLMBreakerOpen` as its refusal, so the enricher backs off for the time the breaker says.

Outcomes that say nothing about the provider's health (429, 4xx, cancellation) are reported
as `neutral()`.
"""

from __future__ import annotations

from streamrec.breaker import BreakerState
from streamrec.breaker import CircuitBreaker as _Breaker
from streamrec.llm.errors import LLMBreakerOpen

__all__ = ["BreakerState", "CircuitBreaker"]


class CircuitBreaker(_Breaker):
    """Use: `breaker.before_call()`, then exactly one of `success()`, `failure()`, `neutral()`."""

    def before_call(self) -> None:
        """Admit a call or raise `LLMBreakerOpen` (no I/O, so it cannot block)."""
        wait = self.retry_in()
        if wait is not None:
            raise LLMBreakerOpen(wait)
