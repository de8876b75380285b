"""Errors of the serving worker.

    StreamRecError
    └── ServingError
        ├── Overloaded            admission shed the request (503 + Retry-After, do not retry)
        ├── DependencyError       a store or the model failed (the fallback chain catches it)
        │   ├── DependencyTimeout its deadline passed
        │   ├── BreakerOpen       its circuit breaker is open: not even tried
        │   └── ModelUnavailable  no ranker is loaded (yet, or any more)

Adapters translate redis, Feast, torch and Kafka errors into these at the boundary, so the
request path only ever catches `DependencyError`.
"""

from __future__ import annotations

from streamrec.errors import StreamRecError


class ServingError(StreamRecError):
    """Base of the serving worker's errors."""


class Overloaded(ServingError):
    """Admission refused the request: its waiting room is full or it waited too long."""

    def __init__(self, priority: str, reason: str, retry_after_s: int = 1) -> None:
        super().__init__(f"overloaded, do not retry ({priority}: {reason})")
        self.priority = priority
        self.reason = reason
        self.retry_after_s = retry_after_s


class DependencyError(ServingError):
    """A dependency (features, candidates, popular list, model) failed."""

    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(f"{dependency}: {reason}")
        self.dependency = dependency
        self.reason = reason


class DependencyTimeout(DependencyError):
    """A dependency did not answer within its deadline."""


class BreakerOpen(DependencyError):
    """The dependency's circuit breaker is open; the call was not attempted."""


class ModelUnavailable(DependencyError):
    """No ranking model is loaded."""

    def __init__(self, reason: str = "no ranker loaded") -> None:
        super().__init__("model", reason)
