"""The LLM client, the enricher and the local provider."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from streamrec.infra.settings.base import Section


class LLMSettings(Section):
    """The LLM client, the enricher and the local provider (`local_*`).

    Time-scaled tests shrink `requests_per_minute`'s minute by raising the rate and the
    provider's `local_window_s` together (e.g. 3600/min against 60 per 1 s)."""

    base_url: str = Field(
        "",
        description="the provider's OpenAI-compatible API; empty: the local provider's, "
        "http://{local_host}:{local_port}/v1 (so changing the port moves both)",
    )
    model: str = "local-echo"
    api_key: SecretStr = SecretStr("")
    requests_per_minute: int = 500
    timeout_s: float = 10.0
    rate_safety: float = Field(0.95, gt=0, le=1, description="share of the limit the bucket uses")
    burst: int = Field(5, ge=1, description="token bucket capacity")
    max_attempts: int = Field(4, ge=1)
    call_deadline_s: float = Field(60.0, description="one call, retries and waits included")
    backoff_base_s: float = 0.5
    backoff_max_s: float = 10.0
    retry_budget_ratio: float = Field(0.2, ge=0, description="retries per first attempt")
    retry_budget_min: int = Field(10, ge=0, description="retries always allowed per window")
    breaker_failures: int = Field(5, ge=1)
    breaker_reset_s: float = 30.0
    max_tokens: int = 120
    concurrency: int = Field(16, ge=1, description="calls in flight in the enricher")
    queue_max: int = Field(10_000, ge=1, description="enricher queue bound; lowest shed")
    result_ttl_s: int = 7 * 24 * 3600
    request_ttl_s: int = Field(3600, description="expiry of requests the enricher makes")
    request_missing: bool = Field(True, description="request descriptions for catalog items")
    local_host: str = "127.0.0.1"
    local_port: int = 18080
    local_limit: int = Field(500, ge=1, description="requests allowed per local_window_s")
    local_window_s: float = 60.0
    local_latency_min_ms: int = 200
    local_latency_max_ms: int = 2000
    local_failure: Literal["none", "error", "hang"] = "none"
    local_api_key: SecretStr = SecretStr("")
    local_log: str = Field("", description="JSONL request log file of the local provider")

    @property
    def api_url(self) -> str:
        """Where the client sends its calls (and its key): `base_url`, else derived from the
        local provider's host and port rather than a second copy of the port that could
        point the key at whatever else listens there."""
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"http://{self.local_host}:{self.local_port}/v1"
